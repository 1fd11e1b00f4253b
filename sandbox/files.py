"""File access through the sandbox itself: the init opens the path inside
the sandbox's root and passes the open file back.  Paths resolve inside the
sandbox (its root is the pivoted one), so a symlink planted in the rootfs can
never redirect a read or a write onto the host; nor onto the init's own /proc
files, or into any procfs, sysfs or cgroup file for writing: the init refuses
those (EACCES).  Every failure, also of the host's own I/O on what the init
passed back, is a FileOpError naming the operation and the path.

Each operation is written once, sans I/O, as a generator that yields request
messages and is sent back (reply, fd); `Files` drives them with blocking
round trips, `AsyncFiles` with awaited ones."""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import struct
import sys
from collections.abc import Awaitable, Callable, Generator
from pathlib import Path
from typing import TypeVar

from . import protocol
from .errors import FileOpError, ProtocolError, os_error_text
from .spec import check_abs_path

T = TypeVar("T")
Answer = tuple[protocol.Reply, "int | None"]
Op = Generator[bytes, Answer, T]


def _fail(reply: protocol.Reply) -> protocol.Fail:
    try:
        return protocol.decode_fail(reply.body)
    except protocol.Malformed as e:
        raise ProtocolError(str(e)) from None


def _fail_errno(reply: protocol.Reply) -> int:
    return _fail(reply).errno


# How the init's refusal of a kernel file begins (KERNEL_FILE in init.c):
# one of its own /proc files, or a write to procfs, sysfs or a cgroup fs.
KERNEL_FILE = "kernel file "


def _open_failed(op: str, path: str, reply: protocol.Reply) -> FileOpError:
    fail = _fail(reply)
    if fail.errno == errno.EACCES and fail.detail.startswith(KERNEL_FILE):
        # Only the errno and a fixed marker are taken from the init's text.
        return FileOpError(
            op,
            path,
            fail.errno,
            f"{os_error_text(fail.errno)}: the sandbox's init opens none of its own /proc files for "
            "the host, nor any procfs, sysfs or cgroup file for writing (a symlink may lead there)",
        )
    return FileOpError(op, path, fail.errno)


def _failed(op: str, path: str, e: OSError) -> FileOpError:
    """An error of the host's I/O on a file the sandbox passed back."""
    return FileOpError(op, path, e.errno or errno.EIO)


def _host_failed(op: str, path: str, host_path: str | os.PathLike[str], e: OSError) -> FileOpError:
    """An error of the host's own file system during a put() or get()."""
    err = e.errno or errno.EIO
    return FileOpError(op, path, err, f"on the host, at {os.fspath(host_path)!r}: {os_error_text(err)}")


def _open(op: str, path: str, flags: int, mode: int = 0o644) -> Op[int]:
    p = check_abs_path("path", path)
    reply, fd = yield protocol.encode_path(protocol.REQ_OPEN, 0, p, flags, mode)
    if reply.type == protocol.REP_FD and fd is not None:
        # The init refuses anything but files and directories; a process
        # that took it over (cap_add=CAP_SYS_PTRACE) could send a pipe,
        # whose read would block here for good.
        kind = stat.S_IFMT(os.fstat(fd).st_mode)
        if kind not in (stat.S_IFREG, stat.S_IFDIR):
            os.close(fd)
            raise ProtocolError(f"the sandbox answered an open of {p!r} with a file of type {kind:#o}")
        return fd
    if fd is not None:
        os.close(fd)
    if reply.type == protocol.REP_ERROR:
        raise _open_failed(op, p, reply)
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


CHUNK = 1 << 20
# What read_bytes() and read_text() read at most unless told: the sandbox
# can make a file of any size (a sparse one costs it no disk), and the read
# is host memory.  get() writes to the host's disk: it copies at most
# MAX_GET bytes in all (holes and hardlinks are kept, and count once).
MAX_READ = 64 << 20
MAX_GET = 1 << 30
# What list() returns and get() copies at most, in entries, unless told: a
# sandbox makes a million empty files (or links of one) in seconds, at no
# cost to its disk, and each name is host memory (and, in a get(), a round
# trip and a file on the host).
MAX_ENTRIES = 100_000


def _too_big(op: str, path: str, max_size: int) -> FileOpError:
    return FileOpError(
        op, path, errno.EFBIG, f"more than max_size={max_size} bytes: pass a larger max_size (None: no limit)"
    )


def _too_many(op: str, path: str, max_entries: int) -> FileOpError:
    return FileOpError(
        op,
        path,
        errno.EFBIG,
        f"more than max_entries={max_entries} entries: pass a larger max_entries (None: no limit)",
    )


def _read_all(fd: int, path: str, limit: int | None = None) -> bytes:
    """Up to EOF, or the first `limit` bytes.  A read() of a file of the
    sandbox's can fail in any way (EIO from a /proc/PID/mem, EINVAL from a
    file with no read): FileOpError, as for its open."""
    chunks, n = [], 0
    try:
        while (limit is None or n < limit) and (
            b := os.read(fd, CHUNK if limit is None else min(CHUNK, limit - n))
        ):
            chunks.append(b)
            n += len(b)
    except OSError as e:
        raise _failed("read", path, e) from None
    return b"".join(chunks)


def read_bytes(
    path: str, missing_ok: bool = False, limit: int | None = None, max_size: int | None = None
) -> Op[bytes | None]:
    """The file's content: only its first `limit` bytes if given (for what
    the host parses itself); FileOpError (EFBIG) if it has more than
    `max_size`."""
    try:
        fd = yield from _open("read", path, os.O_RDONLY)
    except FileOpError as e:
        if missing_ok and e.errno == errno.ENOENT:
            return None
        raise
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise FileOpError("read", path, errno.EISDIR)
        if max_size is not None and st.st_size > max_size:
            raise _too_big("read", path, max_size)
        if max_size is not None:  # a file of /proc says size 0; one may grow meanwhile
            limit = max_size + 1 if limit is None else min(limit, max_size + 1)
        data = _read_all(fd, path, limit)
        if max_size is not None and len(data) > max_size:
            raise _too_big("read", path, max_size)
        return data
    finally:
        os.close(fd)


def _pread(src: int, n: int, off: int, path: str) -> bytes:
    try:
        return os.pread(src, n, off)
    except OSError as e:
        raise _failed("get", path, e) from None


def _copy_out(src: int, dst: Path, room: int, path: str) -> int:
    """A file of the sandbox onto the host, CHUNK at a time, its holes kept
    as holes (SEEK_DATA): a sparse file costs the host no disk beyond its
    data.  Its size; -1 (nothing left at dst beyond `room`) if it is larger
    than `room`, also by growing meanwhile.  A failure on the sandbox's side
    (src) is a FileOpError here; any other OSError is the host's (dst)."""
    if os.fstat(src).st_size > room:
        return -1
    with open(dst, "wb") as f:
        out, off = f.fileno(), 0
        while True:
            try:
                off = os.lseek(src, off, os.SEEK_DATA)
                end = os.lseek(src, off, os.SEEK_HOLE)
            except OSError as e:
                if e.errno in (errno.EINVAL, errno.ESPIPE):  # no SEEK_DATA (/proc): read it through
                    return _copy_stream(src, out, off, room, path)
                if e.errno != errno.ENXIO:  # ENXIO: no data past off
                    raise _failed("get", path, e) from None
                break
            if end > room:
                return -1
            while off < end and (b := _pread(src, min(CHUNK, end - off), off, path)):
                off = _pwrite_all(out, b, off)
            if off < end:
                break  # shorter than it was: changed meanwhile
        size = max(off, os.fstat(src).st_size)
        if size > room:
            return -1
        os.ftruncate(out, size)
        return size


def write_bytes(path: str, data: bytes, mode: int = 0o644) -> Op[None]:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data: expected bytes, got {type(data).__name__}")
    fd = yield from _open("write", path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except OSError as e:  # ENOSPC when the sandbox filled its disk, EDQUOT, EFBIG...
        raise _failed("write", path, e) from None
    finally:
        os.close(fd)


def _scan(
    op: str, path: str, fd: int, left: int | None, plain_only: bool = False
) -> tuple[list[str], int | None]:
    """The names in the directory `fd`, sorted, and what is left of the
    entry budget `left` after them (None: no budget).  The names are counted
    as they come, so the host never holds more than the budget: past it,
    FileOpError (EFBIG), with `left` < 0.  With `plain_only`, only the names
    of plain files and directories are kept (all are counted)."""
    names = []
    try:
        with os.scandir(fd) as it:
            for entry in it:
                if left is not None:
                    left -= 1
                    if left < 0:
                        break
                # d_type where the file system gives it (else an lstat
                # beside the fd, which follows nothing)
                if plain_only and (
                    entry.is_symlink()
                    or not (entry.is_dir(follow_symlinks=False) or entry.is_file(follow_symlinks=False))
                ):
                    continue
                names.append(entry.name)
    except OSError as e:
        raise _failed(op, path, e) from None
    names.sort()
    return names, left


def listdir(path: str, max_entries: int | None = MAX_ENTRIES) -> Op[list[str]]:
    fd = yield from _open("list", path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        names, left = _scan("list", path, fd, max_entries)
    finally:
        os.close(fd)
    if left is not None and left < 0:
        assert max_entries is not None
        raise _too_many("list", path, max_entries)
    return names


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
    tree = src.is_dir()
    try:
        if tree:
            children = sorted(src.iterdir())
        else:
            data, mode = src.read_bytes(), stat.S_IMODE(src.stat().st_mode)
    except OSError as e:
        raise _host_failed("put", path, src, e) from None
    if tree:
        yield from mkdir(path, parents=True, exist_ok=True)
        for child in children:
            yield from put(child, path.rstrip("/") + "/" + child.name)
    else:
        yield from write_bytes(path, data, mode)


# A tree deeper than this fails get() with ELOOP, and leaves nothing: a
# chain of directories costs the sandbox next to nothing, and each level
# holds host memory (and a path the host's own tools may not handle).
MAX_DEPTH = 64


def _pwrite_all(out: int, data: bytes, off: int) -> int:
    """All of `data` at `off`; the offset past it."""
    view = memoryview(data)
    while view:
        n = os.pwrite(out, view, off)
        off += n
        view = view[n:]
    return off


def _copy_stream(src: int, out: int, off: int, room: int, path: str) -> int:
    """The rest of a file without SEEK_DATA, read in order from `off`: its
    size, or -1 past `room`."""
    while b := _pread(src, CHUNK, off, path):
        if off + len(b) > room:
            return -1
        off = _pwrite_all(out, b, off)
    return off


class _Copy:
    """What one get() has copied: bytes and entries left of its budgets,
    and the files of more than one link, where each was put (made again as
    links)."""

    def __init__(self, max_size: int | None, max_entries: int | None) -> None:
        self.max_size = max_size
        self.left = max_size
        self.max_entries = max_entries
        self.entries_left = max_entries
        self.links: dict[tuple[int, int], Path] = {}
        self.made: list[Path] = []  # what it created on the host, in order

    def make(self, dst: Path) -> None:
        """dst is about to be created (unless it is there already)."""
        if not os.path.lexists(dst):
            self.made.append(dst)

    def undo(self) -> None:
        """A failed get() leaves nothing it created: children first."""
        for p in reversed(self.made):
            try:
                if p.is_dir() and not p.is_symlink():
                    p.rmdir()
                else:
                    p.unlink()
            except OSError:
                pass  # e.g. a directory the host put something in meanwhile


def get(
    path: str,
    host_path: str | os.PathLike[str],
    max_size: int | None = MAX_GET,
    max_entries: int | None = MAX_ENTRIES,
) -> Op[None]:
    """Copy out plain files and directories only.  Anything else in the tree
    is skipped: a symlink (each entry is opened with O_NOFOLLOW inside the
    sandbox, so one is never followed: a link to "." would otherwise copy a
    tree without end), a FIFO, a socket, a device node.  At most `max_size`
    bytes in all (files' sizes, a hardlinked file once) and `max_entries`
    directory entries in all (skipped ones too), or FileOpError (EFBIG).  A
    file of more than one link is made again as links of one file on the
    host, where the host can link it (else it is copied again, and counted
    again).  A get() that fails leaves nothing it created on the host (a
    file it had overwritten stays overwritten)."""
    copy = _Copy(max_size, max_entries)
    try:
        yield from _get(path, Path(host_path), 0, copy)
    except BaseException:
        copy.undo()
        raise


def _link(src: Path, dst: Path, path: str) -> bool:
    """dst made a link of src, the host's copy of the same file of the
    sandbox; False where the host cannot link them (then it is copied)."""
    try:
        try:
            os.link(src, dst)
        except FileExistsError:
            # there from before (a second get() into the same place): replaced,
            # as a file is rewritten (a directory of the host's is kept: EISDIR)
            dst.unlink()
            os.link(src, dst)
    except OSError as e:
        # EMLINK: src has as many links as its file system allows (65,000
        # on ext4; the sandbox's tmpfs has no limit); EXDEV: dst is on
        # another file system; EPERM: one with no hardlinks (vfat)
        if e.errno in (errno.EMLINK, errno.EXDEV, errno.EPERM):
            return False
        raise _host_failed("get", path, dst, e) from None
    return True


def _get(path: str, dst: Path, depth: int, copy: _Copy) -> Op[None]:
    try:
        fd = yield from _open("get", path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileOpError as e:
        # a symlink (ELOOP), or a special file that replaced a plain one
        # since the directory was read (EINVAL: the init refuses it; ENXIO:
        # a socket, which no open() takes)
        if depth > 0 and e.errno in (errno.ELOOP, errno.EINVAL, errno.ENXIO):
            return
        raise
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            if depth >= MAX_DEPTH:
                raise FileOpError(
                    "get",
                    path,
                    errno.ELOOP,
                    f"more than MAX_DEPTH={MAX_DEPTH} directories deep (ELOOP): get() goes no deeper",
                )
            names, copy.entries_left = _scan("get", path, fd, copy.entries_left, plain_only=True)
            if copy.entries_left is not None and copy.entries_left < 0:
                assert copy.max_entries is not None
                raise _too_many("get", path, copy.max_entries)
        else:
            key = (st.st_dev, st.st_ino)
            copy.make(dst)
            if st.st_nlink > 1 and key in copy.links and _link(copy.links[key], dst, path):
                return  # the sandbox's one file, once on the host too
            try:
                size = _copy_out(fd, dst, sys.maxsize if copy.left is None else copy.left, path)
                if size < 0:
                    dst.unlink(missing_ok=True)
            except FileOpError:
                raise
            except OSError as e:
                raise _host_failed("get", path, dst, e) from None
            if size < 0:
                assert copy.max_size is not None
                raise _too_big("get", path, copy.max_size)
            if copy.left is not None:
                copy.left -= size
            if st.st_nlink > 1:
                copy.links[key] = dst  # the newest copy: where the next link goes
            return
    finally:
        os.close(fd)
    if depth == 0:
        for parent in reversed(dst.parents):
            copy.make(parent)  # mkdir(parents=True) makes those missing
    copy.make(dst)
    try:
        dst.mkdir(parents=depth == 0, exist_ok=True)
    except OSError as e:
        raise _host_failed("get", path, dst, e) from None
    for name in names:
        # names come from the sandbox: never let one climb out of dst
        if "/" in name or name in (".", ".."):
            raise ProtocolError(f"a directory entry named {name!r}")
        yield from _get(path.rstrip("/") + "/" + name, dst / name, depth + 1, copy)


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

    def read_bytes(
        self, path: str, *, missing_ok: bool = False, max_size: int | None = MAX_READ
    ) -> bytes | None:
        """The file's content; FileOpError (EFBIG) past `max_size` bytes
        (64 MiB by default: the content is held in memory; None: no limit)."""
        return run_sync(read_bytes(path, missing_ok, max_size=max_size), self._rt)

    def read_text(self, path: str, encoding: str = "utf-8", *, max_size: int | None = MAX_READ) -> str:
        data = run_sync(read_bytes(path, max_size=max_size), self._rt)
        assert data is not None
        return data.decode(encoding)

    def write_bytes(self, path: str, data: bytes, mode: int = 0o644) -> None:
        run_sync(write_bytes(path, data, mode), self._rt)

    def write_text(self, path: str, text: str, mode: int = 0o644, encoding: str = "utf-8") -> None:
        run_sync(write_bytes(path, text.encode(encoding), mode), self._rt)

    def list(self, path: str, *, max_entries: int | None = MAX_ENTRIES) -> list[str]:
        """The names in a directory, sorted; FileOpError (EFBIG) past
        `max_entries` (100,000 by default: the names are held in memory;
        None: no limit)."""
        return run_sync(listdir(path, max_entries), self._rt)

    def is_dir(self, path: str) -> bool:
        return run_sync(is_dir(path), self._rt)

    def mkdir(self, path: str, mode: int = 0o755, *, parents: bool = False, exist_ok: bool = False) -> None:
        run_sync(mkdir(path, mode, parents, exist_ok), self._rt)

    def put(self, host_path: str | os.PathLike[str], path: str) -> None:
        """Copy a host file or directory tree into the sandbox."""
        run_sync(put(host_path, path), self._rt)

    def get(
        self,
        path: str,
        host_path: str | os.PathLike[str],
        *,
        max_size: int | None = MAX_GET,
        max_entries: int | None = MAX_ENTRIES,
    ) -> None:
        """Copy a file or directory tree of the sandbox onto the host, its
        plain files and directories only (symlinks, FIFOs, sockets and device
        nodes are skipped): at most `max_size` bytes in all (1 GiB by default)
        and `max_entries` directory entries in all (100,000 by default), or
        FileOpError (EFBIG); None lifts either limit."""
        run_sync(get(path, host_path, max_size, max_entries), self._rt)


class AsyncFiles:
    """`AsyncSandbox.files`: the same operations, awaited."""

    def __init__(self, roundtrip: Callable[[bytes], Awaitable[Answer]]) -> None:
        self._rt = roundtrip

    async def read_bytes(
        self, path: str, *, missing_ok: bool = False, max_size: int | None = MAX_READ
    ) -> bytes | None:
        return await run_async(read_bytes(path, missing_ok, max_size=max_size), self._rt)

    async def read_text(self, path: str, encoding: str = "utf-8", *, max_size: int | None = MAX_READ) -> str:
        data = await run_async(read_bytes(path, max_size=max_size), self._rt)
        assert data is not None
        return data.decode(encoding)

    async def write_bytes(self, path: str, data: bytes, mode: int = 0o644) -> None:
        await run_async(write_bytes(path, data, mode), self._rt)

    async def write_text(self, path: str, text: str, mode: int = 0o644, encoding: str = "utf-8") -> None:
        await run_async(write_bytes(path, text.encode(encoding), mode), self._rt)

    async def list(self, path: str, *, max_entries: int | None = MAX_ENTRIES) -> list[str]:
        return await run_async(listdir(path, max_entries), self._rt)

    async def is_dir(self, path: str) -> bool:
        return await run_async(is_dir(path), self._rt)

    async def mkdir(
        self, path: str, mode: int = 0o755, *, parents: bool = False, exist_ok: bool = False
    ) -> None:
        await run_async(mkdir(path, mode, parents, exist_ok), self._rt)

    async def put(self, host_path: str | os.PathLike[str], path: str) -> None:
        await run_async(put(host_path, path), self._rt)

    async def get(
        self,
        path: str,
        host_path: str | os.PathLike[str],
        *,
        max_size: int | None = MAX_GET,
        max_entries: int | None = MAX_ENTRIES,
    ) -> None:
        await run_async(get(path, host_path, max_size, max_entries), self._rt)
