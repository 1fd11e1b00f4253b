"""Hostile image content against the host: a FIFO where the setup creates
a file, huge (sparse) files the host reads whole, and layer tars that make
the unpacker use a closed directory fd or hold a whole header in memory.
Each test asserts the safe behaviour; the comment says what an attacker
gets while it fails."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sandbox import ConfigError, LaunchError, Mount, Sandbox, images
from sandbox.images.errors import ImageError, UnsafeLayer
from sandbox.images.store import Store
from sandbox.images.unpack import unpack
from tests import leakcheck
from tests.conftest import require, sh_ok

pytestmark = pytest.mark.integration

BIG = 256 << 20  # a sparse file of this size costs no disk
PEAK = 32 << 20  # what reading a user db, copying a file out or unpacking may hold


def _sparse(path: Path, head: bytes, size: int = BIG) -> None:
    if os.path.lexists(path):
        path.unlink()
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(size)


def _peak(fn: Callable[[], object]) -> tuple[object, int]:
    """fn's result (or the exception it raised) and the Python memory it held at most."""
    tracemalloc.start()
    try:
        try:
            out: object = fn()
        except Exception as e:  # the caller looks at it
            out = e
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# -- setup: a FIFO where the plan creates a file --------------------------------------------


@pytest.mark.parametrize("where", ["/etc/hostname", "mount destination"])
def test_a_fifo_where_the_setup_makes_a_file_is_not_waited_on(
    sandbox_host, copied_rootfs: Path, tmp_path: Path, where: str
) -> None:
    # SBX_OP_MKFILE opens the target O_RDONLY | O_CREAT without O_NONBLOCK:
    # on an image's FIFO the open waits for a writer that never comes.  An
    # attacker gets every start of its image stuck for START_TIMEOUT (30 s),
    # then an ETIMEDOUT that names no path (a judge starting thousands of
    # sandboxes loses 30 s of a worker each).
    host_file = tmp_path / "motd"
    host_file.write_text("from the host\n")
    mounts = []
    path, want = "/etc/hostname", "box\n"
    if where != "/etc/hostname":
        path, want = "/etc/motd", "from the host\n"
        mounts = [Mount(host_file, path, read_only=True)]
    fifo = copied_rootfs / path.lstrip("/")
    if os.path.lexists(fifo):
        fifo.unlink()
    os.mkfifo(fifo)
    before = leakcheck.snapshot()
    try:
        with Sandbox(rootfs=copied_rootfs, hostname="box", mounts=mounts) as sb:
            # a bind over the FIFO is fine too: the sandbox's own file shows
            assert sh_ok(sb, f"cat {path}") == want
    except LaunchError as e:
        assert f"({path})" in str(e), f"the error names no path: {e}"
    assert leakcheck.leaks(before) == []


# -- exec: the user lookup reads /etc/passwd whole ------------------------------------------


def test_a_huge_passwd_is_not_read_whole(sandbox_host, copied_rootfs: Path) -> None:
    # users.py parses at most MAX_DB (4 MiB), but _base._user_op reads the
    # file with files.read_bytes, whole, into the host process first.  A
    # sparse /etc/passwd of a terabyte costs the image nothing (nor code in
    # the sandbox, on its tmpfs, before the first exec with a named user);
    # the attacker gets the host process killed by the OOM killer (here a
    # 256 MiB file holds ~512 MiB of the host's memory).
    pw = (copied_rootfs / "etc" / "passwd").read_bytes()
    _sparse(copied_rootfs / "etc" / "passwd", pw)
    with Sandbox(rootfs=copied_rootfs) as sb:
        out, peak = _peak(lambda: sb.exec(["id", "-u"], user="nobody"))
        if isinstance(out, ConfigError):
            assert "/etc/passwd" in str(out)
        else:
            assert not isinstance(out, Exception), out
            assert out.stdout == b"65534\n"  # type: ignore[attr-defined]
    assert peak < PEAK, f"the host held {peak >> 20} MiB to look up a user"


# -- files API: get() holds each file whole --------------------------------------------------


def test_get_copies_a_huge_file_in_bounded_memory(sandbox_host, copied_rootfs: Path, tmp_path: Path) -> None:
    # files.get reads each file whole (_read_all) before writing it out: a
    # sparse file in the image, or one made on the sandbox's tmpfs, of any
    # size the attacker likes gets the host process OOM-killed by the copy
    # a grading system makes of the sandbox's output directory.
    (copied_rootfs / "out").mkdir()
    _sparse(copied_rootfs / "out" / "big", b"head\n")
    with Sandbox(rootfs=copied_rootfs) as sb:
        out, peak = _peak(lambda: sb.files.get("/out", tmp_path / "copy"))
    assert not isinstance(out, Exception), out
    assert peak < PEAK, f"the host held {peak >> 20} MiB to copy one file"
    with open(tmp_path / "copy" / "big", "rb") as f:
        assert f.read(5) == b"head\n"


# -- the unpacker ----------------------------------------------------------------------------


@pytest.fixture
def layer(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    require(os.geteuid() == 0, "unpacking keeps the tar's ownership: needs root")
    tree = tmp_path / "tree"
    tree.mkdir()
    yield tmp_path / "blob", tree


def _tar(*entries: tuple[str, str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, kind in entries:
            ti = tarfile.TarInfo(name)
            ti.mtime = 1704067200
            if kind == "dir":
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                t.addfile(ti)
            else:
                ti.size, ti.mode = len(kind), 0o644
                t.addfile(ti, io.BytesIO(kind.encode()))
    return buf.getvalue()


@pytest.mark.parametrize("replace", ["x/.wh.d", "x/d"])
def test_a_directory_removed_in_a_subdirectory_keeps_its_parent_fd(
    layer: tuple[Path, Path], replace: str
) -> None:
    # _Extractor._remove closes every cached directory fd (_forget_dirs)
    # before removing the tree (name, dir_fd=parent), and the caller then made
    # the whiteout or the file with that same, closed `parent`.  Alone, the
    # unpack fails with EBADF; with another thread opening a directory in
    # between (pull.install unpacks the layers of an image concurrently, and
    # an application has its own threads) the number names that directory:
    # the attacker's whiteout deletes a subtree of a name it picks there
    # (another layer being unpacked, or any directory the process holds) and
    # leaves a device node or a file of its own in it.
    blob, tree = layer
    last = (replace, "now a file\n" if replace == "x/d" else "")
    blob.write_bytes(_tar(("x", "dir"), ("x/d", "dir"), ("x/d/f", "old\n"), last))
    unpack(str(blob), str(tree), None)
    d = tree / "x" / "d"
    if replace == "x/d":
        assert d.read_text() == "now a file\n"
    else:
        # a whiteout no longer removes anything of its own layer (the OCI
        # image spec): x/d stays, opaque over the lower layers' x/d
        assert (d / "f").read_text() == "old\n" and os.getxattr(d, "user.overlay.opaque") == b"y"


@pytest.mark.parametrize("kind", [tarfile.XHDTYPE, tarfile.GNUTYPE_LONGNAME])
def test_a_huge_extended_header_is_refused_before_it_is_read(layer: tuple[Path, Path], kind: bytes) -> None:
    # tarfile reads a pax header or a GNU long name whole into memory (twice,
    # decoded), before unpack's checks (MAX_NAME, the names) see it; zeros
    # compress 1000:1.  The attacker gets, from a 64 KiB layer, 128 MiB of
    # the host's memory here: from a 32 MiB layer, 64 GiB, the OOM killer.
    blob, tree = layer
    size = 64 << 20
    first = b"13 path=file\n" if kind == tarfile.XHDTYPE else b"file"
    hdr = tarfile.TarInfo("././@PaxHeader" if kind == tarfile.XHDTYPE else "././@LongLink")
    hdr.type, hdr.size = kind, size
    f = tarfile.TarInfo("file")
    f.size = 3
    with gzip.open(blob, "wb", compresslevel=6) as g:
        g.write(hdr.tobuf(format=tarfile.USTAR_FORMAT) + first)
        left, zeros = size - len(first), bytes(1 << 20)
        while left > 0:
            g.write(zeros[: min(left, len(zeros))])
            left -= len(zeros)
        g.write(f.tobuf(format=tarfile.USTAR_FORMAT) + b"hi\n".ljust(512, b"\0") + bytes(1024))
    out, peak = _peak(lambda: unpack(str(blob), str(tree), None))
    assert peak < PEAK, f"the unpacker held {peak >> 20} MiB for one header"
    assert isinstance(out, UnsafeLayer), f"unpacked: {out!r}"


def test_a_huge_layout_index_is_not_read_whole(tmp_path: Path) -> None:
    # load_layout reads index.json whole, then cuts it at MANIFEST_MAX: a
    # sparse index.json in an OCI layout directory (downloaded, unpacked)
    # gets `sandbox load` the host process's memory of its size, to the OOM
    # killer.
    lay = tmp_path / "oci"
    (lay / "blobs" / "sha256").mkdir(parents=True)
    (lay / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    _sparse(lay / "index.json", b'{"schemaVersion": 2, "manifests": []}')
    out, peak = _peak(lambda: images.load(lay, name="x", store=Store(tmp_path / "store")))
    assert isinstance(out, (ImageError, ConfigError)), out
    assert peak < PEAK, f"the loader held {peak >> 20} MiB for index.json"
