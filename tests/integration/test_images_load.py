"""`sandbox load`: an OCI image layout directory and a docker save tarball,
verified like a pull, then run with no registry at all."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from sandbox import Sandbox, images
from sandbox.errors import ConfigError
from sandbox.images.errors import DigestMismatch, ImageError, UnsafeLayer
from sandbox.images.store import Store
from tests.conftest import require, require_sandbox_host, sh_ok
from tests.registry import mkoci

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _tools(store: Path) -> None:
    require(Path("/bin/busybox").is_file(), "no /bin/busybox (apt-get install busybox-static)")


def layout(tmp_path: Path, tag: str) -> tuple[Path, str]:
    """An OCI layout: busybox, plus /hello in a second layer."""
    lay = mkoci.Layout(str(tmp_path / "oci"))
    top = mkoci.tar_layer([("file", "hello", 0o644, "from the layout\n")])
    layers = [mkoci.layer(lay, mkoci.tar_layer(mkoci.busybox())), mkoci.layer(lay, top, "zstd")]
    lay.tag(tag, mkoci.image(lay, layers))
    lay.save()
    return tmp_path / "oci", layers[1][0]["digest"]


def test_oci_layout(tmp_path: Path) -> None:
    path, _ = layout(tmp_path, "v1")
    with pytest.raises(ConfigError, match=r"^name: .* names an image only 'v1': give the repository"):
        images.load(path)
    [ref] = images.load(path, name="local/app")
    assert str(ref) == "docker.io/local/app:v1"
    assert images.verify() == []
    require_sandbox_host()
    with Sandbox(image="local/app:v1") as sb:  # in the store: no registry is asked
        assert sh_ok(sb, "cat /hello") == "from the layout\n"


def test_corrupt_layout_blob(tmp_path: Path) -> None:
    path, digest = layout(tmp_path, "example.com/app:v1")
    blob = path / "blobs" / "sha256" / digest.removeprefix("sha256:")
    data = bytearray(blob.read_bytes())
    data[20] ^= 1
    blob.write_bytes(bytes(data))
    with pytest.raises(DigestMismatch, match=f"blob {digest}: the content's digest is"):
        images.load(path)
    assert images.list() == [] and not Store().has_blob(digest)


def add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    tf.addfile(ti, io.BytesIO(data))


def test_docker_save_tarball(tmp_path: Path) -> None:
    base = mkoci.tar_layer(mkoci.busybox())
    top = mkoci.tar_layer([("file", "etc/motd", 0o644, "saved by docker\n")])
    diff_ids = ["sha256:" + hashlib.sha256(x).hexdigest() for x in (base, top)]
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "config": {"Env": ["PATH=/bin", "SAVED=yes"], "Cmd": ["cat", "/etc/motd"], "User": "65534"},
        }
    ).encode()
    cfg_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = [
        {
            "Config": cfg_name,
            "RepoTags": ["example/saved:1", "example/saved:latest"],
            "Layers": ["aaa/layer.tar", "bbb/layer.tar"],
        }
    ]
    tarball = tmp_path / "saved.tar"
    with tarfile.open(tarball, "w") as tf:
        add(tf, "manifest.json", json.dumps(manifest).encode())
        add(tf, cfg_name, config)
        add(tf, "aaa/layer.tar", base)
        add(tf, "bbb/layer.tar", top)
    r = subprocess.run(
        [sys.executable, "-m", "sandbox.cli", "load", str(tarball)], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout == "loaded example/saved:1\nloaded example/saved:latest\n"
    assert images.verify() == [] and list((Store().root / "tmp").iterdir()) == []
    require_sandbox_host()
    with Sandbox(image="example/saved:1") as sb:
        assert sb.image is not None
        assert sb.exec(sb.image.argv()).stdout == b"saved by docker\n"
        assert sh_ok(sb, 'echo "$SAVED $(id -u)"') == "yes 65534\n"  # the image's Env and User
    with Sandbox(image="example/saved:1", user="0") as sb:
        assert sh_ok(sb, "id -u") == "0\n"


def test_not_an_image(tmp_path: Path) -> None:
    (tmp_path / "junk").write_bytes(b"nothing")
    with pytest.raises(ConfigError, match="neither a layout directory nor a tarball"):
        images.load(tmp_path / "junk")
    with pytest.raises(ConfigError, match="not an OCI image layout"):
        images.load(tmp_path)


def test_the_layers_of_an_image_share_one_size_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MAX_IMAGE_SIZE counts the files of all the image's layers (each is
    under it alone): the image is not stored (one layer may be, for prune)."""
    monkeypatch.setattr("sandbox.images.unpack.MAX_IMAGE_SIZE", 1000)
    lay = mkoci.Layout(str(tmp_path / "oci"))
    layers = [mkoci.layer(lay, mkoci.tar_layer([("file", n, 0o644, "x" * 600)])) for n in ("a", "b")]
    lay.tag("big:1", mkoci.image(lay, layers))
    lay.save()
    with pytest.raises(UnsafeLayer, match="the image's layers hold more than 1000 bytes of files"):
        images.load(tmp_path / "oci", name="local/big")
    assert images.list() == [] and len(os.listdir(Store().root / "layers")) <= 1
    assert os.listdir(Store().root / "tmp") == []


def test_a_whiteout_hides_only_the_lower_layers(tmp_path: Path) -> None:
    """Found by review: a whiteout deleted what its own layer made.  Seen
    through the overlay: the top layer's x/ and y/ (whiteouts after and
    before them) and its file `keep` are there; the lower ones' entries not."""
    lay = mkoci.Layout(str(tmp_path / "oci"))
    lower = [("dir", d, 0o755, None) for d in ("x", "y")]
    lower += [("file", f"{d}/old", 0o644, "lower\n") for d in ("x", "y")]
    lower.append(("file", "keep", 0o644, "lower\n"))
    top = [("dir", "x", 0o755, None), ("file", "x/new", 0o644, "top\n"), ("file", ".wh.x", 0o644, "")]
    top += [("file", ".wh.y", 0o644, ""), ("dir", "y", 0o755, None), ("file", "y/new", 0o644, "top\n")]
    top += [("file", "keep", 0o644, "top\n"), ("file", ".wh.keep", 0o644, "")]
    layers = [mkoci.layer(lay, mkoci.tar_layer(x)) for x in (mkoci.busybox(), lower, top)]
    lay.tag("1", mkoci.image(lay, layers))
    lay.save()
    images.load(tmp_path / "oci", name="local/wh")
    require_sandbox_host()
    with Sandbox(image="local/wh:1") as sb:
        assert sh_ok(sb, "ls -A /x /y; cat /keep") == "/x:\nnew\n\n/y:\nnew\ntop\n"


def test_a_bad_working_dir_is_the_images_fault(tmp_path: Path) -> None:
    """Found by review: a WorkingDir with '..' was reported as a bad
    `workdir` option, one the caller never gave."""
    lay = mkoci.Layout(str(tmp_path / "oci"))
    layers = [mkoci.layer(lay, mkoci.tar_layer(mkoci.busybox()))]
    lay.tag("1", mkoci.image(lay, layers, extra={"WorkingDir": "/srv/../etc"}))
    lay.save()
    images.load(tmp_path / "oci", name="local/wd")
    with pytest.raises(ImageError) as e:
        Sandbox(image="local/wd:1")
    assert not isinstance(e.value, ConfigError)
    assert str(e.value) == (
        "docker.io/local/wd:1: the image's WorkingDir '/srv/../etc' is not an absolute path without '..'; "
        "pass workdir= to choose the working directory"
    )
    assert os.listdir(Store().root / "holds") == []
    require_sandbox_host()
    with Sandbox(image="local/wd:1", workdir="/etc") as sb:
        assert sh_ok(sb, "pwd") == "/etc\n"


def test_a_bad_user_is_the_images_fault(tmp_path: Path) -> None:
    """An image whose User names no user of its /etc/passwd: the exec says
    it is the image's User, not a bad `user` option the caller never gave."""
    require_sandbox_host()
    lay = mkoci.Layout(str(tmp_path / "oci"))
    layers = [mkoci.layer(lay, mkoci.tar_layer(mkoci.busybox()))]
    lay.tag("1", mkoci.image(lay, layers, extra={"User": "nosuchuser"}))
    lay.save()
    images.load(tmp_path / "oci", name="local/baduser")
    with Sandbox(image="local/baduser:1") as sb:
        with pytest.raises(ImageError) as e:
            sb.exec(["true"])
        assert not isinstance(e.value, ConfigError)
        assert "the image's User 'nosuchuser' cannot be used" in str(e.value)
        assert "pass user= to choose the user" in str(e.value)
        assert sb.exec(["id", "-u"], user="0").stdout_text == "0\n"  # the caller's choice works
    theirs = Sandbox(image="local/baduser:1", user="nosuchuser")
    with pytest.raises(ConfigError, match=r"^user: "), theirs as sb:
        sb.exec(["true"])  # the caller's own bad option is theirs
