"""File access through the sandbox itself: the init opens the path inside
the sandbox's root and passes the open file back.  Paths resolve inside the
sandbox (its root is the pivoted one), so a symlink planted in the rootfs can
never redirect a read or a write onto the host."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path

from . import protocol
from ._base import file_error_text
from .errors import FileOpError, ProtocolError
from .spec import check_abs_path

Roundtrip = Callable[[bytes], tuple[protocol.Reply, "int | None"]]

O_DIRECTORY = os.O_DIRECTORY


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        b = os.read(fd, 1 << 20)
        if not b:
            return b"".join(chunks)
        chunks.append(b)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


class Files:
    """`sandbox.files`: read, write, list, put and get."""

    def __init__(self, roundtrip: Roundtrip) -> None:
        self._rt = roundtrip

    def _open(self, op: str, path: str, flags: int, mode: int = 0o644) -> int:
        p = check_abs_path("path", path)
        reply, fd = self._rt(protocol.encode_path(protocol.REQ_OPEN, 0, p, flags, mode))
        if reply.type == protocol.REP_FD and fd is not None:
            return fd
        if fd is not None:
            os.close(fd)
        if reply.type == protocol.REP_ERROR:
            err, _ = file_error_text(reply)
            raise FileOpError(op, p, err)
        raise ProtocolError(f"unexpected reply type {reply.type} to an open")

    def read_bytes(self, path: str, *, missing_ok: bool = False) -> bytes | None:
        try:
            fd = self._open("read", path, os.O_RDONLY)
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

    def read_text(self, path: str, encoding: str = "utf-8") -> str:
        data = self.read_bytes(path)
        assert data is not None
        return data.decode(encoding)

    def write_bytes(self, path: str, data: bytes, mode: int = 0o644) -> None:
        fd = self._open("write", path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)

    def write_text(self, path: str, text: str, mode: int = 0o644, encoding: str = "utf-8") -> None:
        self.write_bytes(path, text.encode(encoding), mode)

    def list(self, path: str) -> list[str]:
        fd = self._open("list", path, os.O_RDONLY | O_DIRECTORY)
        try:
            return sorted(os.listdir(fd))
        finally:
            os.close(fd)

    def is_dir(self, path: str) -> bool:
        try:
            fd = self._open("stat", path, os.O_RDONLY)
        except FileOpError as e:
            if e.errno == errno.ENOENT:
                return False
            raise
        try:
            return stat.S_ISDIR(os.fstat(fd).st_mode)
        finally:
            os.close(fd)

    def mkdir(self, path: str, mode: int = 0o755, *, parents: bool = False, exist_ok: bool = False) -> None:
        p = check_abs_path("path", path)
        if parents and p != "/":
            parent = p.rsplit("/", 1)[0] or "/"
            if not self.is_dir(parent):
                self.mkdir(parent, mode, parents=True, exist_ok=True)
        reply, fd = self._rt(protocol.encode_path(protocol.REQ_MKDIR, 0, p, 0, mode))
        if fd is not None:
            os.close(fd)
        if reply.type == protocol.REP_ERROR:
            err, _ = file_error_text(reply)
            if err == errno.EEXIST and exist_ok and self.is_dir(p):
                return
            raise FileOpError("mkdir", p, err)

    def put(self, host_path: str | os.PathLike[str], path: str) -> None:
        """Copy a host file or directory tree into the sandbox."""
        src = Path(host_path)
        if src.is_dir():
            self.mkdir(path, parents=True, exist_ok=True)
            for child in sorted(src.iterdir()):
                self.put(child, path.rstrip("/") + "/" + child.name)
        else:
            self.write_bytes(path, src.read_bytes(), stat.S_IMODE(src.stat().st_mode))

    def get(self, path: str, host_path: str | os.PathLike[str]) -> None:
        """Copy a file or directory tree out of the sandbox onto the host.
        Entries of the sandbox are read through it; only plain files and
        directories are copied (names come from the sandbox: checked)."""
        dst = Path(host_path)
        if self.is_dir(path):
            dst.mkdir(parents=True, exist_ok=True)
            for name in self.list(path):
                if "/" in name or name in (".", ".."):
                    raise ProtocolError(f"a directory entry named {name!r}")
                self.get(path.rstrip("/") + "/" + name, dst / name)
        else:
            data = self.read_bytes(path)
            assert data is not None
            dst.write_bytes(data)
