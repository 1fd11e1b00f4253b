"""sandbox.fsbatch: many file calls in one C call, each result its own
value or -errno, in order, a failure not stopping the others."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from sandbox import fsbatch


def test_mkdir_and_rmdir_report_each_path(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    assert fsbatch.mkdir_many([str(a), str(a), str(b)]) == [0, -errno.EEXIST, 0]
    assert oct(a.stat().st_mode & 0o777) == oct(0o755 & ~_umask())
    assert fsbatch.rmdir_many([str(a), str(tmp_path / "none"), str(tmp_path / "full"), str(b)]) == [
        0,
        -errno.ENOENT,
        -errno.ENOTEMPTY,
        0,
    ]
    assert not a.exists() and not b.exists()


def test_open_pread_close(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"12345\n")
    fds = fsbatch.open_many([str(f), str(tmp_path / "none"), str(f)], os.O_RDONLY)
    assert fds[1] == -errno.ENOENT and fds[0] >= 0 and fds[2] >= 0
    assert os.get_inheritable(fds[0]) is False  # O_CLOEXEC
    assert fsbatch.pread_many([fds[0], -1, fds[2]], size=3) == [b"123", -errno.EBADF, b"123"]
    assert fsbatch.pread_many([fds[0]]) == [b"12345\n"]  # at offset 0 each time
    fsbatch.close_many([fds[0], fds[2]])
    for fd in (fds[0], fds[2]):
        try:
            os.fstat(fd)
        except OSError as e:
            assert e.errno == errno.EBADF
        else:
            raise AssertionError(f"fd {fd} is still open")


def test_empty_batches() -> None:
    assert fsbatch.open_many([], os.O_RDONLY) == []
    assert fsbatch.pread_many([]) == []
    fsbatch.close_many([])


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


def test_write_many_writes_each_in_order(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    fa = os.open(a, os.O_WRONLY | os.O_CREAT, 0o600)
    fb = os.open(b, os.O_WRONLY | os.O_CREAT, 0o600)
    r = os.open(tmp_path, os.O_RDONLY)  # a directory: write() gives EBADF
    try:
        got = fsbatch.write_many([(fa, b"1"), (r, b"x"), (fb, b"22"), (fa, b"333")])
        assert got == [1, -errno.EBADF, 2, 3]
    finally:
        for fd in (fa, fb, r):
            os.close(fd)
    assert (a.read_bytes(), b.read_bytes()) == (b"1333", b"22")
    assert fsbatch.write_many([]) == []


def test_dup_many_gives_close_on_exec_duplicates(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"dup")
    fd = os.open(f, os.O_RDONLY)
    try:
        got = fsbatch.dup_many([fd, -1, fd])
        assert got[1] == -errno.EBADF and got[0] >= 3 and got[2] >= 3 and got[0] != got[2] != fd
        assert all(os.get_inheritable(d) is False for d in (got[0], got[2]))
        assert os.fstat(got[0]).st_ino == os.fstat(fd).st_ino
        assert fsbatch.pread_many([got[2]]) == [b"dup"]
        fsbatch.close_many([got[0], got[2]])
        assert fsbatch.dup_many([]) == []
    finally:
        os.close(fd)
