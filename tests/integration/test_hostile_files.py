"""sandbox.files against a sandbox that sets traps for the host: files whose
read or write fails, symlinks into the init's own /proc, links the host
cannot make, and more directory entries than the host should hold.  Every
failure is a FileOpError naming the operation and the path."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import pytest

from sandbox import AsyncSandbox, FileOpError, Limits, Sandbox
from tests.conftest import require, require_sandbox_host, sh, sh_ok

pytestmark = pytest.mark.integration

OWN_PROC = "opens none of its own /proc files"


@pytest.fixture
def host_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A small tmpfs (64 KiB) on the host, at a directory of tmp_path:
    another file system than tmp_path's, and one that fills up."""
    d = tmp_path / "small"
    d.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(d)], check=True)
    try:
        yield d
    finally:
        subprocess.run(["umount", str(d)], check=True)


SLEEPER = ["sh", "-c", "echo ready; sleep 1000; true"]  # `; true`: sh does not exec sleep


@contextmanager
def sleeper(sb: Sandbox) -> Iterator[int]:
    """The in-sandbox pid of a command (a shell) that runs meanwhile.  It
    has spoken, so its program (argv, memory) is in place."""
    p = sb.spawn(SLEEPER)
    try:
        assert p.stdout is not None and p.stdout.readline() == b"ready\n"
        assert p.pid is not None
        yield p.pid
    finally:
        p.kill()
        p.wait()


# -- the host's I/O on what the init passed back ----------------------------------------


def test_a_read_that_fails_is_a_file_op_error(sb, tmp_path: Path) -> None:
    """A file of the sandbox's whose read() fails (a process's mem at
    offset 0: EIO), read or copied out: FileOpError, not a bare OSError."""
    with sleeper(sb) as pid:
        sh_ok(sb, f"ln -s /proc/{pid}/mem /tmp/result.bin")
        with pytest.raises(FileOpError) as e:
            sb.files.read_bytes("/tmp/result.bin")
        assert e.value.errno == errno.EIO and str(e.value).startswith("read /tmp/result.bin: ")
        with pytest.raises(FileOpError) as e:
            sb.files.get(f"/proc/{pid}/mem", tmp_path / "mem")
        assert e.value.errno == errno.EIO and str(e.value).startswith(f"get /proc/{pid}/mem: ")
    assert list(tmp_path.iterdir()) == []


def test_a_write_to_a_full_disk_is_a_file_op_error(sandbox_host, busybox_rootfs) -> None:
    """The sandbox filled its own disk (its right): the host's write then
    fails with ENOSPC, as a FileOpError."""
    with Sandbox(rootfs=busybox_rootfs, disk="4M", limits=Limits(memory="64M", pids=16, timeout=20)) as sb:
        assert sh(sb, "cat /dev/zero > /tmp/fill").exit_code != 0  # until the disk is full
        with pytest.raises(FileOpError) as e:
            sb.files.write_bytes("/tmp/out.txt", b"y" * 100_000)
        assert e.value.errno == errno.ENOSPC and str(e.value).startswith("write /tmp/out.txt: ")


def test_a_get_onto_a_full_host_disk_is_a_file_op_error(sb, host_tmpfs: Path, tmp_path: Path) -> None:
    sh_ok(sb, "mkdir /out && head -c 1000000 /dev/urandom > /out/big")
    with pytest.raises(FileOpError) as e:
        sb.files.get("/out/big", host_tmpfs / "big")
    assert e.value.errno == errno.ENOSPC
    assert str(e.value).startswith("get /out/big: on the host, at ") and str(host_tmpfs / "big") in str(
        e.value
    )
    assert list(host_tmpfs.iterdir()) == []
    # a host directory that cannot be made: the same
    (tmp_path / "file").write_text("a file, not a directory")
    with pytest.raises(FileOpError) as e:
        sb.files.get("/out", tmp_path / "file" / "o")
    assert e.value.errno == errno.ENOTDIR and str(e.value).startswith("get /out: on the host, at ")


# -- the init's own /proc files, and kernel files for writing ------------------------------


def test_the_init_gives_the_host_none_of_its_own_proc_files(sb, tmp_path: Path) -> None:
    """A sandbox points a result file (or a directory of results) at the
    init's /proc/self: the init would read its own memory map, auxv,
    registers or fds for the host, which no process of the sandbox may."""
    sh_ok(
        sb,
        "ln -s /proc/self /tmp/outdir; ln -s /proc/self/maps /tmp/result.json; "
        "ln -s /proc/thread-self /tmp/thread; ln -s /proc/1/task/1/stat /tmp/log.txt",
    )
    for path in (
        "/tmp/result.json",
        "/tmp/log.txt",
        "/tmp/outdir/auxv",
        "/tmp/outdir/syscall",
        "/tmp/outdir/stat",
        "/tmp/outdir/mem",
        "/tmp/outdir/fdinfo/0",
        "/tmp/thread/maps",
        "/proc/1/smaps",
    ):
        with pytest.raises(FileOpError) as e:
            sb.files.read_bytes(path)
        assert e.value.errno == errno.EACCES and OWN_PROC in str(e.value), path
    for path in ("/tmp/outdir/fd", "/tmp/outdir/map_files", "/tmp/outdir"):
        with pytest.raises(FileOpError) as e:
            sb.files.list(path)
        assert e.value.errno == errno.EACCES, path
    with pytest.raises(FileOpError) as e:
        sb.files.get("/tmp/outdir/maps", tmp_path / "maps")
    assert e.value.errno == errno.EACCES
    assert list(tmp_path.iterdir()) == []


def test_no_magic_link_leads_to_a_file_the_init_holds(sb) -> None:
    """A symlink to /proc/1/exe or /proc/1/fd/N is followed by no request
    of the host's: through it the init opened whatever it holds open (a
    regular file passes the procfs checks, which see only the file)."""
    sh_ok(sb, "ln -s /proc/1/exe /tmp/result.bin; ln -s /proc/1/fd/0 /tmp/in; ln -s /proc/1/root /tmp/r")
    for path in ("/tmp/result.bin", "/proc/1/exe", "/tmp/in", "/proc/self/fd/0", "/tmp/r/etc/hostname"):
        with pytest.raises(FileOpError) as e:
            sb.files.read_bytes(path)
        assert e.value.errno == errno.ELOOP, (path, e.value)
    with pytest.raises(FileOpError):
        sb.files.write_bytes("/tmp/r/tmp/x", b"through the init's root")
    assert sb.files.read_bytes("/etc/hostname") != b""  # plain paths, and /proc/self's own link, still work
    assert b"Name:" in sb.files.read_bytes("/proc/self/status")


def test_no_write_of_the_host_reaches_a_kernel_file(sb) -> None:
    """Writes go to no procfs file: through a link to the init's /proc/self
    the host's data would set the init's own oom_score_adj (500: the first
    the OOM killer takes; a host with CAP_SYS_RESOURCE could even write
    -1000), and so for a command's."""
    own = Path(f"/proc/{sb.pid}/oom_score_adj")
    before = own.read_text()
    sh_ok(sb, "ln -s /proc/self /tmp/outdir")
    with sleeper(sb) as pid:
        for path, data in (
            ("/tmp/outdir/oom_score_adj", b"500"),
            ("/tmp/outdir/clear_refs", b"1"),
            (f"/proc/{pid}/oom_score_adj", b"1000"),
        ):
            with pytest.raises(FileOpError) as e:
                sb.files.write_bytes(path, data)
            assert e.value.errno == errno.EACCES, path
        assert sb.files.read_bytes(f"/proc/{pid}/oom_score_adj") == b"0\n"
    assert own.read_text() == before


def test_other_proc_files_read_as_before(sb) -> None:
    assert b"processor" in sb.files.read_bytes("/proc/cpuinfo")
    assert sb.files.read_bytes("/proc/mounts") == sb.files.read_bytes("/proc/self/mounts") != b""
    assert b"Inter-" in sb.files.read_bytes("/proc/net/dev")  # /proc/net is self/net
    assert sb.files.read_bytes("/proc/1/cmdline") == b"sandbox-init\0"
    assert sb.files.read_bytes("/proc/1/environ") == b""
    assert sb.files.read_bytes("/proc/1/status").startswith(b"Name:\tmemfd:sandbox-i\n")
    assert sb.files.read_bytes("/proc/sys/kernel/ostype") == b"Linux\n"
    with sleeper(sb) as pid:
        assert sb.files.read_bytes(f"/proc/{pid}/cmdline") == ("\0".join(SLEEPER) + "\0").encode()
        assert b"r-xp" in sb.files.read_bytes(f"/proc/{pid}/maps")  # a command's own: the sandbox's
        assert {"1", str(pid), "self", "net"} <= set(sb.files.list("/proc"))


def test_a_sandbox_that_may_mount_cannot_disguise_the_inits_proc_files(sandbox_host, busybox_rootfs) -> None:
    """With CAP_SYS_ADMIN the sandbox can rearrange /proc itself: the init's
    /proc/1 bound elsewhere, over another process's directory, or its maps
    over /proc/cpuinfo.  The init looks each name up again where nothing is
    mounted on top."""
    with Sandbox(rootfs=busybox_rootfs, cap_add=["SYS_ADMIN"]) as sb, sleeper(sb) as pid:
        sh_ok(
            sb,
            f"mkdir /tmp/x && mount --bind /proc/1 /tmp/x && mount --bind /proc/1 /proc/{pid} "
            "&& mount --bind /proc/1/maps /proc/cpuinfo",
        )
        for path in ("/tmp/x/maps", f"/proc/{pid}/maps", f"/proc/{pid}/auxv", "/proc/cpuinfo"):
            with pytest.raises(FileOpError) as e:
                sb.files.read_bytes(path)
            assert e.value.errno == errno.EACCES, path
        assert b"Inter-" in sb.files.read_bytes("/proc/net/dev")
        assert sb.files.read_bytes("/proc/1/cmdline") == b"sandbox-init\0"


# -- links the host cannot make ------------------------------------------------------------


def test_links_across_host_file_systems_are_copies(sb, tmp_path: Path) -> None:
    """One file of the sandbox's, linked into two directories; on the host
    those are two file systems (EXDEV): the second is a copy, and counts
    in max_size."""
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(out / "sub")], check=True)
    try:
        sh_ok(sb, "mkdir -p /res/sub && head -c 3000 /dev/urandom > /res/a && ln /res/a /res/sub/b")
        with pytest.raises(FileOpError) as e:
            sb.files.get("/res", out, max_size=5999)
        assert e.value.errno == errno.EFBIG
        assert sorted(p.name for p in out.rglob("*")) == ["sub"]  # what was there stays
        sb.files.get("/res", out, max_size=6000)
        a, b = out / "a", out / "sub" / "b"
        assert a.read_bytes() == b.read_bytes() and len(a.read_bytes()) == 3000
        assert a.stat().st_dev != b.stat().st_dev
    finally:
        subprocess.run(["umount", str(out / "sub")], check=True)


def test_a_file_at_the_host_link_limit_is_copied(sb, tmp_path: Path) -> None:
    """The host's copy of a linked file is already at its file system's
    link limit (65,000 on ext4; a sandbox's tmpfs has none): the next link
    is a copy (EMLINK)."""
    limit = os.pathconf(tmp_path, "PC_LINK_MAX")
    require(limit <= 65_000, f"the host's tmp dir allows {limit} links per file")
    out, more = tmp_path / "out", tmp_path / "links"
    out.mkdir()
    more.mkdir()
    (out / "a").write_bytes(b"")
    for i in range(limit - 1):  # the test's own links, beside out/
        os.link(out / "a", more / str(i))
    assert (out / "a").stat().st_nlink == limit
    sh_ok(sb, "mkdir /res && echo data > /res/a && ln /res/a /res/b && ln /res/a /res/c")
    sb.files.get("/res", out)  # a: rewritten in place; b: EMLINK, a copy; c: a link of b
    a, b, c = ((out / n).stat() for n in "abc")
    assert (out / "b").read_text() == (out / "c").read_text() == "data\n"
    assert a.st_ino != b.st_ino and (b.st_ino, b.st_nlink) == (c.st_ino, 2)


# -- directory entries ----------------------------------------------------------------------


def test_list_and_get_stop_at_max_entries_by_default(sandbox_host, debian_rootfs, tmp_path: Path) -> None:
    """100,001 names (links of one empty file: no disk, a second to make)
    are one more than list() and get() take unless told."""
    make = (
        'mkdir "/tmp/t"; open(F, ">/tmp/t/0"); close F; '
        'for (1..100_000) { link("/tmp/t/0", "/tmp/t/$_") or die $! }'
    )
    with Sandbox(rootfs=debian_rootfs, limits=Limits(memory="256M", pids=16, timeout=30)) as sb:
        r = sb.exec(["perl", "-e", make])
        assert r.exit_code == 0, r.stderr
        for call in (lambda: sb.files.list("/tmp/t"), lambda: sb.files.get("/tmp/t", tmp_path / "t")):
            with pytest.raises(FileOpError) as e:
                call()
            assert e.value.errno == errno.EFBIG and "max_entries=100000" in str(e.value)
        assert list(tmp_path.iterdir()) == []
        assert len(sb.files.list("/tmp/t", max_entries=None)) == 100_001


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_async_files_take_max_entries(backend: str, busybox_rootfs, tmp_path: Path) -> None:
    require_sandbox_host()

    async def main() -> None:
        async with AsyncSandbox(rootfs=busybox_rootfs) as sb:
            await sb.exec(["sh", "-c", "mkdir /o && touch /o/1 /o/2 /o/3"])
            assert await sb.files.list("/o", max_entries=3) == ["1", "2", "3"]
            with pytest.raises(FileOpError) as e:
                await sb.files.list("/o", max_entries=2)
            assert e.value.errno == errno.EFBIG
            with pytest.raises(FileOpError) as e:
                await sb.files.get("/o", tmp_path / "o", max_entries=2)
            assert e.value.errno == errno.EFBIG and not (tmp_path / "o").exists()
            await sb.files.get("/o", tmp_path / "o", max_entries=3)
            assert sorted(os.listdir(tmp_path / "o")) == ["1", "2", "3"]

    anyio.run(main, backend=backend)
