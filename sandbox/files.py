"""File access through the sandbox itself: the init opens the path inside
the sandbox's root and passes the open file back.  Paths resolve inside the
sandbox (its root is the pivoted one), so a symlink planted in the rootfs can
never redirect a read or a write onto the host.

Each operation is written once, sans I/O, as a generator that yields request
messages and is sent back (reply, fd); `Files` drives them with blocking
round trips, `AsyncFiles` with awaited ones."""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import struct
from collections.abc import Awaitable, Callable, Generator
from pathlib import Path
from typing import TypeVar

from . import protocol
from .errors import FileOpError, ProtocolError
from .spec import check_abs_path

T = TypeVar("T")
Answer = tuple[protocol.Reply, "int | None"]
Op = Generator[bytes, Answer, T]


def _fail_errno(reply: protocol.Reply) -> int:
    try:
        return protocol.decode_fail(reply.body).errno
    except protocol.Malformed as e:
        raise ProtocolError(str(e)) from None


def _open(op: str, path: str, flags: int, mode: int = 0o644) -> Op[int]:
    p = check_abs_path("path", path)
    reply, fd = yield protocol.encode_path(protocol.REQ_OPEN, 0, p, flags, mode)
    if reply.type == protocol.REP_FD and fd is not None:
        return fd
    if fd is not None:
        os.close(fd)
    if reply.type == protocol.REP_ERROR:
        raise FileOpError(op, p, _fail_errno(reply))
    raise ProtocolError(f"unexpected reply type {reply.type} to an open")


TIOCSPTLCK = 0x40045431  # _IOW('T', 0x31, int)
TIOCGPTPEER = 0x5441  # _IO('T', 0x41)


def open_pty() -> Op[tuple[int, int]]:
    """A pty of the sandbox's own devpts (master, slave): the slave has a
    name inside, so ttyname() and `tty` work there.  The init opens the
    master; its peer is opened here, through the master, unlocked first."""
    reply, fd = yield protocol.encode_pty(0)
    if reply.type != protocol.REP_FD or fd is None:
        if fd is not None:
            os.close(fd)
        if reply.type == protocol.REP_ERROR:
            raise FileOpError("open a pty", "/dev/pts/ptmx", _fail_errno(reply))
        raise ProtocolError(f"unexpected reply type {reply.type} to a pty request")
    try:
        fcntl.ioctl(fd, TIOCSPTLCK, struct.pack("i", 0))
        slave = fcntl.ioctl(fd, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        os.close(fd)
        raise FileOpError("open a pty", "/dev/pts/ptmx", e.errno or errno.EIO) from None
    return fd, int(slave)


def _read_all(fd: int) -> bytes:
    chunks = []
    while b := os.read(fd, 1 << 20):
        chunks.append(b)
    return b"".join(chunks)


def read_bytes(path: str, missing_ok: bool = False) -> Op[bytes | None]:
    try:
        fd = yield from _open("read", path, os.O_RDONLY)
    except FileOpError as e:
        if missing_ok and e.errno == errno.ENOENT:
            return None
        raise
    try:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise FileOpError("read", path, errno.EISDIR)
        return _read_all(fd)
    finally:
        os.close(fd)


def write_bytes(path: str, data: bytes, mode: int = 0o644) -> Op[None]:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data: expected bytes, got {type(data).__name__}")
    fd = yield from _open("write", path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def listdir(path: str) -> Op[list[str]]:
    fd = yield from _open("list", path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return sorted(os.listdir(fd))
    finally:
        os.close(fd)


def is_dir(path: str) -> Op[bool]:
    try:
        fd = yield from _open("stat", path, os.O_RDONLY)
    except FileOpError as e:
        if e.errno == errno.ENOENT:
            return False
        raise
    try:
        return stat.S_ISDIR(os.fstat(fd).st_mode)
    finally:
        os.close(fd)


def mkdir(path: str, mode: int = 0o755, parents: bool = False, exist_ok: bool = False) -> Op[None]:
    p = check_abs_path("path", path)
    if parents and p != "/":
        parent = p.rsplit("/", 1)[0] or "/"
        if not (yield from is_dir(parent)):
            yield from mkdir(parent, mode, True, True)
    reply, fd = yield protocol.encode_path(protocol.REQ_MKDIR, 0, p, 0, mode)
    if fd is not None:
        os.close(fd)
    if reply.type == protocol.REP_ERROR:
        err = _fail_errno(reply)
        if err == errno.EEXIST and exist_ok and (yield from is_dir(p)):
            return
        raise FileOpError("mkdir", p, err)


def chown(path: str, uid: int, gid: int) -> Op[None]:
    p = check_abs_path("path", path)
    reply, fd = yield protocol.encode_path(protocol.REQ_CHOWN, 0, p, uid, gid)
    if fd is not None:
        os.close(fd)
    if reply.type == protocol.REP_ERROR:
        raise FileOpError("chown", p, _fail_errno(reply))


def seal_secrets() -> Op[None]:
    """/run/secrets read-only from now on (the init remounts it)."""
    reply, fd = yield protocol.encode_seal_secrets(0)
    if fd is not None:
        os.close(fd)
    if reply.type == protocol.REP_ERROR:
        raise FileOpError("make read-only", "/run/secrets", _fail_errno(reply))
    if reply.type != protocol.REP_OK:
        raise ProtocolError(f"unexpected reply type {reply.type} to sealing the secrets")


def put(host_path: str | os.PathLike[str], path: str) -> Op[None]:
    src = Path(host_path)
    if src.is_dir():
        yield from mkdir(path, parents=True, exist_ok=True)
        for child in sorted(src.iterdir()):
            yield from put(child, path.rstrip("/") + "/" + child.name)
    else:
        yield from write_bytes(path, src.read_bytes(), stat.S_IMODE(src.stat().st_mode))


MAX_DEPTH = 64  # directories deeper than this are not copied out


def get(path: str, host_path: str | os.PathLike[str], depth: int = 0) -> Op[None]:
    """Copy out plain files and directories only.  Each entry is opened with
    O_NOFOLLOW inside the sandbox: a symlink is skipped, never followed (a
    link to "." would otherwise copy a tree without end)."""
    dst = Path(host_path)
    try:
        fd = yield from _open("get", path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileOpError as e:
        if depth > 0 and e.errno == errno.ELOOP:
            return  # a symlink inside the tree
        raise
    try:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            if depth >= MAX_DEPTH:
                raise FileOpError("get", path, errno.ELOOP)
            names = sorted(os.listdir(fd))
        else:
            dst.write_bytes(_read_all(fd))
            return
    finally:
        os.close(fd)
    dst.mkdir(parents=depth == 0, exist_ok=True)
    for name in names:
        # names come from the sandbox: never let one climb out of dst
        if "/" in name or name in (".", ".."):
            raise ProtocolError(f"a directory entry named {name!r}")
        yield from get(path.rstrip("/") + "/" + name, dst / name, depth + 1)


def run_sync(op: Op[T], roundtrip: Callable[[bytes], Answer]) -> T:
    try:
        msg = next(op)
        while True:
            msg = op.send(roundtrip(msg))
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


async def run_async(op: Op[T], roundtrip: Callable[[bytes], Awaitable[Answer]]) -> T:
    try:
        msg = next(op)
        while True:
            msg = op.send(await roundtrip(msg))
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


class Files:
    """`Sandbox.files`: read, write, list, mkdir, put and get."""

    def __init__(self, roundtrip: Callable[[bytes], Answer]) -> None:
        self._rt = roundtrip

    def read_bytes(self, path: str, *, missing_ok: bool = False) -> bytes | None:
        return run_sync(read_bytes(path, missing_ok), self._rt)

    def read_text(self, path: str, encoding: str = "utf-8") -> str:
        data = run_sync(read_bytes(path), self._rt)
        assert data is not None
        return data.decode(encoding)

    def write_bytes(self, path: str, data: bytes, mode: int = 0o644) -> None:
        run_sync(write_bytes(path, data, mode), self._rt)

    def write_text(self, path: str, text: str, mode: int = 0o644, encoding: str = "utf-8") -> None:
        run_sync(write_bytes(path, text.encode(encoding), mode), self._rt)

    def list(self, path: str) -> list[str]:
        return run_sync(listdir(path), self._rt)

    def is_dir(self, path: str) -> bool:
        return run_sync(is_dir(path), self._rt)

    def mkdir(self, path: str, mode: int = 0o755, *, parents: bool = False, exist_ok: bool = False) -> None:
        run_sync(mkdir(path, mode, parents, exist_ok), self._rt)

    def put(self, host_path: str | os.PathLike[str], path: str) -> None:
        """Copy a host file or directory tree into the sandbox."""
        run_sync(put(host_path, path), self._rt)

    def get(self, path: str, host_path: str | os.PathLike[str]) -> None:
        """Copy a file or directory tree of the sandbox onto the host."""
        run_sync(get(path, host_path), self._rt)


class AsyncFiles:
    """`AsyncSandbox.files`: the same operations, awaited."""

    def __init__(self, roundtrip: Callable[[bytes], Awaitable[Answer]]) -> None:
        self._rt = roundtrip

    async def read_bytes(self, path: str, *, missing_ok: bool = False) -> bytes | None:
        return await run_async(read_bytes(path, missing_ok), self._rt)

    async def read_text(self, path: str, encoding: str = "utf-8") -> str:
        data = await run_async(read_bytes(path), self._rt)
        assert data is not None
        return data.decode(encoding)

    async def write_bytes(self, path: str, data: bytes, mode: int = 0o644) -> None:
        await run_async(write_bytes(path, data, mode), self._rt)

    async def write_text(self, path: str, text: str, mode: int = 0o644, encoding: str = "utf-8") -> None:
        await run_async(write_bytes(path, text.encode(encoding), mode), self._rt)

    async def list(self, path: str) -> list[str]:
        return await run_async(listdir(path), self._rt)

    async def is_dir(self, path: str) -> bool:
        return await run_async(is_dir(path), self._rt)

    async def mkdir(
        self, path: str, mode: int = 0o755, *, parents: bool = False, exist_ok: bool = False
    ) -> None:
        await run_async(mkdir(path, mode, parents, exist_ok), self._rt)

    async def put(self, host_path: str | os.PathLike[str], path: str) -> None:
        await run_async(put(host_path, path), self._rt)

    async def get(self, path: str, host_path: str | os.PathLike[str]) -> None:
        await run_async(get(path, host_path), self._rt)
