"""The registry client against the real registry (tests/registry): basic
auth, the Bearer token flow, TLS with a CA file, platform selection, a
corrupted blob on the registry's disk, one download per blob across
processes, and the CLI."""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox import images
from sandbox.images.errors import DigestMismatch, ImageNotFound, PlatformNotFound, RegistryError
from sandbox.images.store import Store
from tests.registry import mkoci
from tests.registry.fixture import Proxy, Registry

pytestmark = pytest.mark.integration


def creds(tmp_path: Path, host: str, user: str, password: str) -> None:
    d = tmp_path / "docker"
    d.mkdir(exist_ok=True)
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    (d / "config.json").write_text(json.dumps({"auths": {host: {"auth": auth}}}))


def test_pull_verifies_and_records(store: Path, registry: Registry) -> None:
    img = images.pull(registry.ref("busybox:latest"))
    want = registry.image("busybox:latest")
    assert img.digest == want["digest"] and len(img.layers) == 1
    assert Path(img.layers[0], "bin", "busybox").is_file()
    [rec] = images.list()
    assert rec["config"] == want["config"] and rec["layers"][0]["digest"] == want["layers"][0]["digest"]
    assert images.verify() == []


def test_basic_auth(store: Path, registry: Registry, tmp_path: Path) -> None:
    ref = registry.ref("busybox:latest", "basic")
    with pytest.raises(RegistryError, match=r"asks for a login: put credentials for 127.0.0.1:5181"):
        images.pull(ref)
    creds(tmp_path, registry.basic, registry.user, "wrong")
    with pytest.raises(RegistryError, match="access denied"):
        images.pull(ref)
    creds(tmp_path, registry.basic, registry.user, registry.password)
    assert images.pull(ref).digest == registry.image("busybox:latest")["digest"]


def test_bearer_token_flow(store: Path, registry: Registry, tmp_path: Path) -> None:
    ref = registry.ref("whiteout:latest", "token")
    assert images.pull(ref).digest == registry.image("whiteout:latest")["digest"]  # anonymous: pull granted
    creds(tmp_path, registry.token, registry.user, "wrong")
    with pytest.raises(RegistryError, match="the token server refused the credentials"):
        images.pull(ref)
    creds(tmp_path, registry.token, registry.user, registry.password)
    assert images.pull(ref).digest == registry.image("whiteout:latest")["digest"]


def test_tls_with_a_ca_file(store: Path, registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    ref = registry.ref("busybox:latest", "tls")
    with pytest.raises(RegistryError, match=r"TLS certificate not trusted .*SANDBOX_REGISTRY_CA"):
        images.pull(ref)
    monkeypatch.setenv("SANDBOX_REGISTRY_CA", registry.ca)
    assert images.pull(ref).digest == registry.image("busybox:latest")["digest"]


def test_mirror_for_docker_hub_names(
    store: Path, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SANDBOX_REGISTRY_MIRRORS", f"http://127.0.0.1:1,http://{registry.plain}")
    img = images.pull("busybox")  # the first mirror is down: the second serves it
    assert str(img.ref) == "docker.io/library/busybox:latest"
    assert img.digest == registry.image("busybox:latest")["digest"]
    with pytest.raises(
        RegistryError, match=r"every endpoint failed: .* cannot reach http://127.0.0.1:1: .* not found on"
    ):
        images.pull("nosuchimage")


def test_platforms(store: Path, registry: Registry) -> None:
    ref = registry.ref("multiarch:latest")
    plats = registry.image("multiarch:latest")["platforms"]
    assert images.pull(ref).digest == plats["linux/amd64"]
    arm = images.pull(ref, platform="linux/arm64")
    assert arm.digest == plats["linux/arm64/v8"]
    assert Path(arm.layers[-1], "ARCH").read_text() == "arm64\n"
    with pytest.raises(
        PlatformNotFound,
        match="no image for platform linux/s390x; the index offers: linux/amd64, linux/arm64/v8",
    ):
        images.pull(ref, platform="linux/s390x")


def test_not_found(store: Path, registry: Registry) -> None:
    with pytest.raises(ImageNotFound, match=r"not found on http://127.0.0.1:5180"):
        images.pull(registry.ref("busybox:nosuchtag"))


def _push_unique(registry: Registry, tmp_path: Path) -> tuple[str, str]:
    """A one-layer image of random content under a fresh name: its blob is
    this test's alone to damage.  (ref, layer digest)"""
    lay = mkoci.Layout(str(tmp_path / "oci"))
    raw = mkoci.tar_layer([("file", "payload", 0o644, secrets.token_bytes(200_000))])
    layer, diff_id = mkoci.layer(lay, raw)
    lay.tag("t", mkoci.image(lay, [(layer, diff_id)]))
    lay.save()
    name = f"test/corrupt-{secrets.token_hex(4)}"
    subprocess.run(
        [
            "skopeo",
            "copy",
            "-q",
            "--dest-tls-verify=false",
            "--preserve-digests",
            f"oci:{tmp_path / 'oci'}:t",
            f"docker://{registry.plain}/{name}:t",
        ],
        check=True,
    )
    return f"{registry.plain}/{name}:t", layer["digest"]


def test_flipped_byte_on_the_registry_is_detected_and_never_used(
    store: Path, registry: Registry, tmp_path: Path
) -> None:
    ref, digest = _push_unique(registry, tmp_path)
    hexd = digest.removeprefix("sha256:")
    data = Path(registry.storage, "docker/registry/v2/blobs/sha256", hexd[:2], hexd, "data")
    with open(data, "r+b") as f:
        f.seek(1000)
        b = f.read(1)
        f.seek(1000)
        f.write(bytes([b[0] ^ 0x01]))
    with pytest.raises(
        DigestMismatch, match=f"blob {digest}: the content's digest is sha256:.*corrupt, not used"
    ):
        images.pull(ref)
    st = Store()
    assert not st.has_blob(digest) and not Path(f"{st.blob_path(digest)}.partial").exists()
    assert os.listdir(st.root / "layers") == [] and images.list() == []
    assert os.listdir(st.root / "tmp") == []
    assert images.verify() == []


def test_one_download_per_blob_across_processes(store: Path, registry: Registry, proxy: Proxy) -> None:
    ref = f"{proxy.addr}/library/busybox:latest"
    code = f"from sandbox import images; images.pull({ref!r})"
    procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(3)]
    assert [p.wait(120) for p in procs] == [0, 0, 0]
    blob = registry.image("busybox:latest")["layers"][0]["digest"]
    assert len(proxy.blob_gets(blob)) == 1, proxy.requests
    assert images.verify() == []


def test_retries_on_5xx_and_resumes_a_broken_download(store: Path, registry: Registry, proxy: Proxy) -> None:
    blob = registry.image("debian:bookworm")["layers"][0]["digest"]
    proxy.fault_on = f"/blobs/{blob} "
    proxy.faults += ["503", "503", "cut", "cut"]
    img = images.pull(f"{proxy.addr}/library/debian:bookworm")
    assert img.digest == registry.image("debian:bookworm")["digest"]
    gets = proxy.blob_gets(blob)
    assert len(gets) == 5  # two 503s, two broken off, then the rest
    assert [b"\r\nRange: bytes=" in h for h in gets] == [False, False, False, True, True]
    assert images.verify() == []


def test_a_bad_partial_download_is_fetched_again(store: Path, registry: Registry, proxy: Proxy) -> None:
    layer = registry.image("busybox:latest")["layers"][0]["digest"]
    st = Store()
    st.ensure()
    Path(f"{st.blob_path(layer)}.partial").write_bytes(b"x" * 1000)  # not the blob's first bytes
    images.pull(f"{proxy.addr}/library/busybox:latest")
    assert [b"\r\nRange: bytes=1000-" in h for h in proxy.blob_gets(layer)] == [True, False]
    assert images.verify() == []


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sandbox.cli", *args], capture_output=True, text=True, timeout=300
    )


def test_cli(store: Path, registry: Registry) -> None:
    from tests.conftest import require_sandbox_host

    ref = registry.ref("whiteout:latest")
    r = cli("pull", ref)
    assert r.returncode == 0, r.stderr
    digest = registry.image("whiteout:latest")["digest"]
    assert r.stdout.startswith(f"{ref}: {digest} (2 layers, ")
    assert ": pulled, " in r.stderr  # the progress display, one line per layer off a terminal
    r = cli("images", "--verify")
    assert r.returncode == 0 and ref in r.stdout and digest[7:19] in r.stdout and "intact" in r.stdout
    require_sandbox_host()
    r = cli("run", ref)
    assert (r.returncode, r.stdout) == (0, "entry in /data: from-image\n"), r.stderr
    r = cli("run", ref, "--", "cat", "changed.txt")
    assert (r.returncode, r.stdout) == (0, "changed v2\n"), r.stderr
    r = cli("rmi", ref)
    assert r.returncode == 0 and f"removed {ref}" in r.stdout
    r = cli("rmi", ref)
    assert r.returncode == 125 and "no such image in the store" in r.stderr
    r = cli("pull", "Bad:Ref")
    assert r.returncode == 125 and "REF: 'Bad:Ref': bad name component 'Bad'" in r.stderr
    assert cli("prune").returncode == 0 and cli("gc").returncode == 0
