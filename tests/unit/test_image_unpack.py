"""Layer unpack with crafted tars: every hostile one is refused and nothing
lands outside the layer directory; whiteouts become what overlay reads."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard

from sandbox.images.errors import DigestMismatch, UnsafeLayer
from sandbox.images.unpack import HOLE, Budget, unpack
from tests.conftest import require


@pytest.fixture(autouse=True)
def _root() -> None:
    require(os.geteuid() == 0, "unpacking keeps the tar's ownership: needs root")


Entry = Callable[[tarfile.TarFile], None]


def ent(
    name: str,
    kind: bytes = tarfile.REGTYPE,
    data: bytes = b"",
    link: str = "",
    mode: int = 0o644,
    uid: int = 0,
    gid: int = 0,
    size: int | None = None,
    pax: dict[str, str] | None = None,
    dev: tuple[int, int] = (0, 0),
) -> Entry:
    def add(t: tarfile.TarFile) -> None:
        ti = tarfile.TarInfo(name)
        ti.type, ti.linkname, ti.mode, ti.uid, ti.gid, ti.mtime = kind, link, mode, uid, gid, 1704067200
        ti.devmajor, ti.devminor = dev
        if pax:
            ti.pax_headers = pax
        if kind == tarfile.REGTYPE:
            ti.size = len(data) if size is None else size
            t.addfile(ti, io.BytesIO(data))
        else:
            t.addfile(ti)

    return add


def raw_tar(*entries: Entry) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for e in entries:
            e(t)
    return buf.getvalue()


def header_only(name: str, size: int) -> bytes:
    """A tar whose one header claims `size` bytes that never follow."""
    ti = tarfile.TarInfo(name)
    ti.size = size
    return ti.tobuf(tarfile.GNU_FORMAT) + b"\0" * 1024


@pytest.fixture
def box(tmp_path: Path) -> dict[str, Path]:
    """box/layer/ (empty, the unpack target), box/outside/secret (must never
    change); the blob is written beside box/."""
    top = tmp_path / "box"
    (top / "layer").mkdir(parents=True)
    (top / "outside").mkdir()
    (top / "outside" / "secret").write_text("secret\n")
    return {"top": top, "layer": top / "layer", "outside": top / "outside", "tmp": tmp_path}


def snapshot(top: Path) -> set[tuple[str, int, int]]:
    """Everything under `top` but the layer dir: (path, mode, size)."""
    out = set()
    for dirpath, dirs, files in os.walk(top):
        if Path(dirpath) == top / "layer":
            dirs[:] = []
            continue
        for n in dirs + files:
            st = os.lstat(os.path.join(dirpath, n))
            out.add((os.path.relpath(os.path.join(dirpath, n), top), st.st_mode, st.st_size))
    return out


def do(box: dict[str, Path], data: bytes, diff_id: str | None = None, **kw: int) -> object:
    blob = box["tmp"] / "blob"
    blob.write_bytes(data)
    return unpack(str(blob), str(box["layer"]), diff_id, **kw)  # type: ignore[arg-type]


def refused(box: dict[str, Path], data: bytes, match: str, **kw: int) -> None:
    before = snapshot(box["top"])
    with pytest.raises(UnsafeLayer, match=match):
        do(box, data, **kw)
    assert snapshot(box["top"]) == before, "something was written outside the layer directory"
    assert (box["outside"] / "secret").read_text() == "secret\n"


# -- hostile tars --------------------------------------------------------------------


def test_dotdot(box: dict[str, Path]) -> None:
    refused(box, raw_tar(ent("../outside/pwned", data=b"x")), "contains '..'")
    refused(box, raw_tar(ent("a/../../outside/pwned", data=b"x")), "contains '..'")


def test_absolute(box: dict[str, Path]) -> None:
    refused(box, raw_tar(ent(str(box["outside"] / "pwned"), data=b"x")), "an absolute path")


@pytest.mark.parametrize("target", ["ABS", "../outside", "../../../../../../ABS"])
def test_through_symlink_in_layer(box: dict[str, Path], target: str) -> None:
    t = target.replace(
        "ABS", str(box["outside"]).lstrip("/") if target.startswith("..") else str(box["outside"])
    )
    refused(
        box,
        raw_tar(ent("link", tarfile.SYMTYPE, link=t), ent("link/pwned", data=b"x")),
        "goes through 'link'",
    )


def test_through_symlink_deeper(box: dict[str, Path]) -> None:
    refused(
        box,
        raw_tar(
            ent("a", tarfile.DIRTYPE, mode=0o755),
            ent("a/b", tarfile.SYMTYPE, link=str(box["outside"])),
            ent("a/b/c/pwned", data=b"x"),
        ),
        "goes through 'a/b'",
    )


def test_through_symlink_across_layers(box: dict[str, Path], tmp_path: Path) -> None:
    """Layer 1 plants etc -> outside; layer 2 writes etc/passwd: each layer
    has its own directory, so layer 2 gets a real etc/ of its own."""
    lower = box["top"] / "lower"
    lower.mkdir()
    blob = tmp_path / "l1"
    blob.write_bytes(raw_tar(ent("etc", tarfile.SYMTYPE, link=str(box["outside"]))))
    unpack(str(blob), str(lower), None)
    before = snapshot(box["top"])
    do(box, raw_tar(ent("etc/passwd", data=b"root::0:0::/:/bin/sh\n")))
    assert snapshot(box["top"]) == before
    assert (box["layer"] / "etc").is_dir() and not (box["layer"] / "etc").is_symlink()
    assert not (box["outside"] / "passwd").exists()


def test_file_replaces_planted_symlink(box: dict[str, Path]) -> None:
    """A later regular file of the same name replaces the symlink, never writes through it."""
    do(box, raw_tar(ent("f", tarfile.SYMTYPE, link=str(box["outside"] / "secret")), ent("f", data=b"mine")))
    assert (box["outside"] / "secret").read_text() == "secret\n"
    assert not (box["layer"] / "f").is_symlink() and (box["layer"] / "f").read_bytes() == b"mine"


def test_dir_replaces_planted_symlink(box: dict[str, Path]) -> None:
    do(
        box,
        raw_tar(
            ent("d", tarfile.SYMTYPE, link=str(box["outside"])),
            ent("d", tarfile.DIRTYPE, mode=0o755),
            ent("d/x", data=b"in"),
        ),
    )
    assert (box["layer"] / "d").is_dir() and not (box["layer"] / "d").is_symlink()
    assert not (box["outside"] / "x").exists()


@pytest.mark.parametrize("link", ["../outside/secret", "ABS"])
def test_hardlink_outside(box: dict[str, Path], link: str) -> None:
    link = str(box["outside"] / "secret") if link == "ABS" else link
    refused(box, raw_tar(ent("h", tarfile.LNKTYPE, link=link)), "hardlink")
    assert os.stat(box["outside"] / "secret").st_nlink == 1


def test_hardlink_through_symlinked_dir(box: dict[str, Path]) -> None:
    refused(
        box,
        raw_tar(
            ent("d", tarfile.SYMTYPE, link=str(box["outside"])), ent("h", tarfile.LNKTYPE, link="d/secret")
        ),
        "not a file of this layer",
    )
    assert os.stat(box["outside"] / "secret").st_nlink == 1


def test_hardlink_to_symlink_links_the_symlink(box: dict[str, Path]) -> None:
    do(
        box,
        raw_tar(
            ent("s", tarfile.SYMTYPE, link=str(box["outside"] / "secret")),
            ent("h", tarfile.LNKTYPE, link="s"),
        ),
    )
    assert os.readlink(box["layer"] / "h") == str(box["outside"] / "secret")
    assert os.stat(box["outside"] / "secret").st_nlink == 1


def test_hardlink_inside_layer(box: dict[str, Path]) -> None:
    do(box, raw_tar(ent("a", data=b"same"), ent("b", tarfile.LNKTYPE, link="a")))
    assert os.stat(box["layer"] / "a").st_ino == os.stat(box["layer"] / "b").st_ino


@pytest.mark.parametrize("name", [".wh...", "d/.wh...", ".wh..", ".wh."])
def test_whiteout_of_dotdot(box: dict[str, Path], name: str) -> None:
    """'.wh...' names '..': removing it would delete the directory above."""
    refused(box, raw_tar(ent("d", tarfile.DIRTYPE, mode=0o755), ent(name, data=b"")), "a whiteout of")
    assert (box["layer"] / "d").is_dir()


def test_absurd_size_in_header(box: dict[str, Path]) -> None:
    refused(box, header_only("big", 10**12), "more than the")


def test_too_much_content(box: dict[str, Path]) -> None:
    data = gzip.compress(raw_tar(*(ent(f"f{i}", data=b"\0" * 4096) for i in range(64))))
    refused(box, data, "more than 65536 bytes", max_size=65536)


def test_not_a_tar(box: dict[str, Path]) -> None:
    refused(box, gzip.compress(b"this is not a tar" * 100), "not a valid tar")


def test_device_nodes_skipped(box: dict[str, Path]) -> None:
    stats = do(
        box,
        raw_tar(
            ent("dev", tarfile.DIRTYPE, mode=0o755),
            ent("dev/null", tarfile.CHRTYPE, dev=(1, 3)),
            ent("dev/sda", tarfile.BLKTYPE, dev=(8, 0)),
            ent("dev/fifo", tarfile.FIFOTYPE),
        ),
    )
    assert sorted(os.listdir(box["layer"] / "dev")) == ["fifo"]
    assert stats.skipped_devices == 2  # type: ignore[attr-defined]


# -- what is kept ----------------------------------------------------------------------


def test_ownership_modes_and_xattrs(box: dict[str, Path]) -> None:
    do(
        box,
        raw_tar(
            ent("bin", tarfile.DIRTYPE, mode=0o750, uid=0, gid=4),
            ent("bin/su", data=b"#!", mode=0o4755, uid=0, gid=0),
            ent(
                "home/u/f",
                data=b"x",
                mode=0o600,
                uid=1000,
                gid=1000,
                pax={
                    "SCHILY.xattr.user.note": "kept",
                    "SCHILY.xattr.user.overlay.redirect": "/etc",
                    "SCHILY.xattr.trusted.x": "dropped",
                },
            ),
            ent("l", tarfile.SYMTYPE, link="/bin/su", uid=5, gid=6),
        ),
    )
    lay = box["layer"]
    st = os.stat(lay / "bin")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o750, 0, 4)
    assert stat.S_IMODE(os.stat(lay / "bin/su").st_mode) == 0o4755
    st = os.stat(lay / "home/u/f")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o600, 1000, 1000)
    assert os.getxattr(lay / "home/u/f", "user.note") == b"kept"
    assert "user.overlay.redirect" not in os.listxattr(lay / "home/u/f")
    assert "trusted.x" not in os.listxattr(lay / "home/u/f")
    assert os.lstat(lay / "l").st_uid == 5 and os.readlink(lay / "l") == "/bin/su"
    assert os.stat(lay / "bin/su").st_mtime == 1704067200


def test_whiteouts_and_opaque(box: dict[str, Path]) -> None:
    stats = do(
        box,
        raw_tar(
            ent("d", tarfile.DIRTYPE, mode=0o755),
            ent("d/.wh.gone", data=b""),
            ent("o", tarfile.DIRTYPE, mode=0o755),
            ent("o/.wh..wh..opq", data=b""),
            ent("o/new", data=b"n"),
            ent(".wh..wh.plnk", data=b""),
        ),
    )
    st = os.lstat(box["layer"] / "d" / "gone")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, 0)  # overlay's whiteout
    assert os.getxattr(box["layer"] / "o", "user.overlay.opaque") == b"y"
    assert sorted(os.listdir(box["layer"] / "o")) == ["new"]
    assert sorted(os.listdir(box["layer"])) == ["d", "o"]
    assert (stats.whiteouts, stats.opaque) == (1, 1)  # type: ignore[attr-defined]


@pytest.mark.parametrize("how", ["gzip", "zstd", "none"])
def test_compressions_and_diff_id(box: dict[str, Path], how: str) -> None:
    raw = raw_tar(ent("a/b", data=b"hello"))
    data = {"gzip": gzip.compress, "zstd": zstandard.ZstdCompressor().compress, "none": bytes}[how](raw)
    do(box, data, "sha256:" + hashlib.sha256(raw).hexdigest())
    assert (box["layer"] / "a/b").read_bytes() == b"hello"


def test_concatenated_gzip(box: dict[str, Path]) -> None:
    raw = raw_tar(ent("a", data=b"1" * 5000))
    do(
        box,
        gzip.compress(raw[:3000]) + gzip.compress(raw[3000:]),
        "sha256:" + hashlib.sha256(raw).hexdigest(),
    )
    assert (box["layer"] / "a").read_bytes() == b"1" * 5000


def test_diff_id_mismatch(box: dict[str, Path]) -> None:
    with pytest.raises(DigestMismatch, match="hashes to sha256:"):
        do(box, gzip.compress(raw_tar(ent("a", data=b"x"))), "sha256:" + "0" * 64)


def test_truncated_gzip(box: dict[str, Path]) -> None:
    data = gzip.compress(raw_tar(ent("a", data=os.urandom(50000))))
    with pytest.raises((DigestMismatch, UnsafeLayer)):
        do(box, data[: len(data) // 2])


def test_corrupt_zstd_is_a_digest_mismatch(box: dict[str, Path]) -> None:
    """zstandard's own error was raised as it was (found by review)."""
    with pytest.raises(DigestMismatch, match="corrupt zstd"):
        do(box, b"\x28\xb5\x2f\xfd" + b"\xff" * 100, "sha256:" + "1" * 64)


def test_too_deep_refused(box: dict[str, Path]) -> None:
    """1500 levels (found by review): dir_fd recursed once per level and raised
    RecursionError, and a tree that deep breaks every recursive walker after."""
    refused(box, raw_tar(ent("a/" * 1500 + "f", data=b"x")), "1501 directory levels deep, more than the 256")


def test_depth_at_the_limit(box: dict[str, Path]) -> None:
    name = "/".join(["d"] * 255 + ["f"])
    do(box, raw_tar(ent(name, data=b"deep")))
    assert (box["layer"] / name).read_bytes() == b"deep"
    refused(box, raw_tar(ent("e/" + name, data=b"x")), "257 directory levels deep")


def test_sparse_member_written_sparse(box: dict[str, Path]) -> None:
    """Found by review: a GNU sparse member (here PAX format 0.1) was
    written densely, so a layer of a few KB made a file of any apparent
    size on the host's disk.  Kept small here: 64 MiB apparent."""
    size = 64 << 20
    sparse = {"GNU.sparse.map": f"0,4,{size - 5},5", "GNU.sparse.size": str(size)}
    data = gzip.compress(raw_tar(ent("big", data=b"headhello", pax=sparse)))
    assert len(data) < 1024
    do(box, data)
    f = box["layer"] / "big"
    st = os.stat(f)
    assert st.st_size == size and st.st_blocks * 512 <= 2 * HOLE, f"{st.st_blocks * 512} bytes on disk"
    with open(f, "rb") as r:
        assert r.read(4) == b"head" and r.read(HOLE) == bytes(HOLE)
        r.seek(size - 5)
        assert r.read() == b"hello"


def test_zeros_are_holes_and_data_is_kept(box: dict[str, Path]) -> None:
    body = os.urandom(HOLE + 7) + bytes(3 * HOLE) + b"tail"
    do(box, raw_tar(ent("f", data=body)))
    assert (box["layer"] / "f").read_bytes() == body


def test_image_budget(box: dict[str, Path]) -> None:
    """The layers of one image share a Budget (MAX_IMAGE_SIZE): apparent sizes count."""
    budget = Budget(100 << 20)
    sparse = {"GNU.sparse.map": "0,1", "GNU.sparse.size": str(64 << 20)}
    do(box, raw_tar(ent("a", data=b"x", pax=sparse)), budget=budget)  # type: ignore[arg-type]
    (box["top"] / "layer2").mkdir()
    blob = box["tmp"] / "blob2"
    blob.write_bytes(raw_tar(ent("b", data=b"y", pax=sparse)))
    over = r"the image's layers hold more than 104857600 bytes .*MAX_IMAGE_SIZE"
    with pytest.raises(UnsafeLayer, match=over):
        unpack(str(blob), str(box["top"] / "layer2"), None, budget=budget)
    assert not (box["top"] / "layer2" / "b").exists()


def test_whiteout_spares_its_own_layer(box: dict[str, Path]) -> None:
    """Found by review: `.wh.NAME` deleted the NAME the same layer had made.
    The OCI image spec: whiteouts "MUST only apply to resources in
    lower/parent layers", before or after the entry in the tar."""
    stats = do(
        box,
        raw_tar(
            ent("keep", data=b"mine"),
            ent(".wh.keep", data=b""),
            ent("x", tarfile.DIRTYPE, mode=0o755),
            ent("x/new", data=b"n"),
            ent(".wh.x", data=b""),
            ent(".wh.y", data=b""),
            ent("y", tarfile.DIRTYPE, mode=0o755),
            ent("y/new", data=b"n"),
            ent(".wh.z", data=b""),
            ent("z", data=b"file after its whiteout"),
        ),
    )
    lay = box["layer"]
    assert (lay / "keep").read_bytes() == b"mine"
    assert (lay / "z").read_bytes() == b"file after its whiteout"
    for d in ("x", "y"):  # the layer's own directory, opaque: the lower one's entries stay hidden
        assert sorted(os.listdir(lay / d)) == ["new"]
        assert os.getxattr(lay / d, "user.overlay.opaque") == b"y"
    assert stats.whiteouts == 4  # type: ignore[attr-defined]


def test_an_entry_under_a_whiteout_without_its_directory(box: dict[str, Path]) -> None:
    """Found in review: `.wh.x` then `x/f` with no entry of `x` itself was
    refused (x was the whiteout's device).  Now x is this layer's directory,
    opaque, as with an entry of x's own; deeper ones are made too."""
    do(
        box,
        raw_tar(
            ent(".wh.x", data=b""),
            ent("x/f", data=b"f"),
            ent("d", tarfile.DIRTYPE, mode=0o755),
            ent("d/.wh.y", data=b""),
            ent("d/y/z/g", data=b"g"),
        ),
    )
    lay = box["layer"]
    assert (lay / "x" / "f").read_bytes() == b"f" and (lay / "d" / "y" / "z" / "g").read_bytes() == b"g"
    for d in (lay / "x", lay / "d" / "y"):
        assert os.getxattr(d, "user.overlay.opaque") == b"y"
    with pytest.raises(OSError):
        os.getxattr(lay / "d" / "y" / "z", "user.overlay.opaque")  # made by this layer: nothing to hide


def test_an_entry_under_a_file_is_still_refused(box: dict[str, Path]) -> None:
    refused(box, raw_tar(ent("f", data=b"f"), ent("f/g", data=b"g")), "which is not a directory")
