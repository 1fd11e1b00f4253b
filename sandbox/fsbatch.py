"""Many small file-system calls in one C call (sandbox/_cext/fsbatch.c),
for the cgroup code: each os.open/os.close/os.rmdir released and retook
the interpreter lock, and a thread of ours often held it by then, so that
a 5 us call took 20-40 us (measured).  Results are values or -errno, in
the order given; nothing raises here."""

from __future__ import annotations

import os
from collections.abc import Sequence

from ._core import ffi, lib


def _run(op: int, items: Sequence[object], arg: int = 0) -> list[int]:
    n = len(items)
    if n == 0:
        return []
    ops = ffi.new("struct sbx_fsop[]", n)
    keep = []  # the path strings, alive for the call
    for i, x in enumerate(items):
        o = ops[i]
        o.op = op
        if isinstance(x, int):
            o.fd = x
        else:
            b = ffi.new("char[]", os.fsencode(x))  # type: ignore[arg-type]
            keep.append(b)
            o.path = b
        o.arg = arg
    lib.sbx_fs_run(ops, n)
    return [ops[i].result for i in range(n)]


def error(result: int, path: str | None = None) -> OSError:
    """The OSError for a failed result (-errno)."""
    return OSError(-result, os.strerror(-result), path)


def open_many(paths: Sequence[str], flags: int) -> list[int]:
    """open() each path: its fd, or -errno."""
    return _run(lib.SBX_FS_OPEN, paths, flags)


def _on_fds(op: int, fds: Sequence[int], size: int = 0) -> tuple[list[int], object]:
    """sbx_fs_fds: the results, and the buffer of a PREAD."""
    n = len(fds)
    result = ffi.new("int[]", n)
    buf = ffi.new("char[]", n * size) if size else ffi.NULL
    lib.sbx_fs_fds(op, fds, n, buf, size, result)
    return list(result), buf


def close_many(fds: Sequence[int]) -> None:
    if fds:
        _on_fds(lib.SBX_FS_CLOSE, fds)


def dup_many(fds: Sequence[int]) -> list[int]:
    """A close-on-exec duplicate of each fd: the new fd, or -errno."""
    return _on_fds(lib.SBX_FS_DUP, fds)[0] if fds else []


def mkdir_many(paths: Sequence[str]) -> list[int]:
    """mkdir() each path (mode 0755): 0 or -errno."""
    return _run(lib.SBX_FS_MKDIR, paths)


def rmdir_many(paths: Sequence[str]) -> list[int]:
    """rmdir() each path: 0 or -errno."""
    return _run(lib.SBX_FS_RMDIR, paths)


def pread_many(fds: Sequence[int], size: int = 4096) -> list[bytes | int]:
    """One pread() at offset 0 of each fd: its bytes, or -errno."""
    if not fds:
        return []
    got, buf = _on_fds(lib.SBX_FS_PREAD, fds, size)
    data = ffi.buffer(buf)
    return [data[i * size : i * size + r] if r >= 0 else r for i, r in enumerate(got)]


def write_many(items: Sequence[tuple[int, bytes]]) -> list[int]:
    """One write() of each (fd, data): the length written, or -errno (a
    cgroupfs file takes a value in one write)."""
    n = len(items)
    if n == 0:
        return []
    ops = ffi.new("struct sbx_fsop[]", n)
    keep = []  # the buffers, alive for the call
    for i, (fd, data) in enumerate(items):
        b = ffi.new("char[]", data)
        keep.append(b)
        o = ops[i]
        o.op, o.fd, o.buf, o.len = lib.SBX_FS_WRITE, fd, b, len(data)
    lib.sbx_fs_run(ops, n)
    return [ops[i].result for i in range(n)]
