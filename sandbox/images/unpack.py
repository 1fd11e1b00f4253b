"""Layer unpack: a gzip, zstd or plain tar into a fresh directory, with
nothing ever written outside it.

Every name is cleaned first (absolute paths and `..` are refused), and every
parent directory is opened with openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS
| RESOLVE_NO_XDEV): a path through a symlink planted by an earlier entry is
refused by the kernel, not by string games.  Files are then created relative
to that directory fd with O_EXCL | O_NOFOLLOW, hardlinks only to files of
this layer.  Each layer goes into its own empty directory, so a symlink of a
lower layer is never on the path either.

The OCI whiteouts become what the core's overlay mount (`userxattr`, in a
user namespace) reads: `.wh.NAME` a 0/0 character device NAME (made here, as
host root; overlay treats it as "deleted" in any lower layer), and
`.wh..wh..opq` the xattr user.overlay.opaque="y" on its directory; neither
deletes an entry of its own layer (see _Extractor._whiteout).  Device
nodes of the image are skipped.  Ownership and modes are the tar's (the
core's idmapped mounts shift them at run time); xattrs are kept when they
are user.* (but not overlay's own) or file capabilities.
"""

from __future__ import annotations

import collections
import ctypes
import errno
import hashlib
import os
import stat
import tarfile
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

from . import trees
from .errors import DigestMismatch, ImageError, UnsafeLayer

CHUNK = 1 << 20
MAX_LAYER_SIZE = 64 << 30  # bytes of file content per layer
# Bytes of file content (apparent sizes) the layers of one image may unpack
# between them, in one pull or load.  The largest images in common use (CUDA
# and machine learning stacks) unpack to some 20-30 GB; without a cap, a
# layer of a few KB claims far more (a sparse member, or zeros that
# compress 1000:1), times up to 500 layers.
MAX_IMAGE_SIZE = 64 << 30
# Files are written with holes where a block this size (aligned) is all
# zeros: a sparse tar member (tarfile hands its holes over as zeros) costs
# the disk what its data does, not its apparent size.
HOLE = 64 << 10
_ZEROS = bytes(HOLE)
MAX_ENTRIES = 1_000_000
MAX_NAME = 4096
# Directory levels of an entry's path.  Real images stay far below (Debian's
# deepest paths have about 15 levels; npm's nested node_modules rarely pass
# 60), while the host's recursive walkers (os.walk, shutil.rmtree and
# copytree in Python 3.11, one frame per level against a recursion limit of
# about 1000) fail on a deeper tree: 256 leaves room for both.  PATH_MAX
# (4096) alone would allow 2048 levels of one-letter names.
MAX_DEPTH = 256
WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
OPAQUE_XATTR = "user.overlay.opaque"
XATTRS_KEPT = ("security.capability",)

# openat2(2)
_SYS_OPENAT2 = 437  # the same number on every architecture
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
_RESOLVE = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def openat2(dirfd: int, path: str, flags: int, resolve: int = _RESOLVE) -> int:
    how = _OpenHow(flags | os.O_CLOEXEC, 0, resolve)
    fd = _libc.syscall(_SYS_OPENAT2, dirfd, os.fsencode(path), ctypes.byref(how), ctypes.sizeof(how))
    if fd < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), path)
    return int(fd)


def clean(name: str, what: str = "entry") -> str:
    """A tar name as a relative path without '.', '' or '..' parts ("" is the root)."""
    if "\0" in name or len(name) > MAX_NAME:
        raise UnsafeLayer(f"{what} {name[:100]!r}: a name with NUL or longer than {MAX_NAME}")
    if name.startswith("/"):
        raise UnsafeLayer(f"{what} {name[:200]!r}: an absolute path (layer entries are relative)")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeLayer(f"{what} {name[:200]!r}: contains '..' (it would leave the layer)")
    if any(len(os.fsencode(p)) > 255 for p in parts):
        raise UnsafeLayer(f"{what} {name[:200]!r}: a name component longer than 255 bytes")
    if len(parts) > MAX_DEPTH:
        raise UnsafeLayer(
            f"{what} {name[:200]!r}: {len(parts)} directory levels deep, more than the {MAX_DEPTH} allowed"
        )
    return "/".join(parts)


class _Decompressed:
    """The tar stream of a blob: decompressed (by the blob's magic bytes),
    hashed (the diff_id) and counted, in bounded steps."""

    def __init__(self, f: IO[bytes], limit: int) -> None:
        self.f = f
        self.h = hashlib.sha256()
        self.n = 0
        self.limit = limit
        magic = f.read(4)
        f.seek(0)
        self._zstd: Any = None
        self._gz: Any = None
        self._tail = b""
        if magic[:2] == b"\x1f\x8b":
            self._gz = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif magic == b"\x28\xb5\x2f\xfd":
            import zstandard

            self._zstd = zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True)

    def _raw(self, n: int) -> bytes:
        if self._zstd is not None:
            return bytes(self._zstd.read(n))
        if self._gz is None:
            return self.f.read(n)
        while True:
            if self._tail:
                data = self._gz.decompress(self._tail, n)
                self._tail = self._gz.unconsumed_tail
            else:
                chunk = self.f.read(CHUNK)
                if not chunk:
                    if not self._gz.eof:
                        raise DigestMismatch("a gzip layer ends early: the blob is truncated")
                    return b""
                data = self._gz.decompress(chunk, n)
                self._tail = self._gz.unconsumed_tail
            if self._gz.eof and self._gz.unused_data:
                # another gzip member follows (concatenated gzip)
                rest = self._gz.unused_data + self._tail
                self._gz = zlib.decompressobj(16 + zlib.MAX_WBITS)
                self._tail = rest
            if data:
                return bytes(data)
            if self._gz.eof and not self._tail:
                chunk = self.f.read(CHUNK)
                if not chunk:
                    return b""
                self._gz = zlib.decompressobj(16 + zlib.MAX_WBITS)
                self._tail = chunk

    def read(self, n: int = CHUNK) -> bytes:
        try:
            data = self._raw(max(1, min(n, CHUNK)) if n and n > 0 else CHUNK)
        except zlib.error as e:
            raise DigestMismatch(f"a corrupt gzip layer: {e}") from None
        except Exception as e:
            if type(e).__name__ != "ZstdError":  # zstandard's, imported only for zstd layers
                raise
            raise DigestMismatch(f"a corrupt zstd layer: {e}") from None
        self.n += len(data)
        if self.n > self.limit:
            raise UnsafeLayer(f"the layer's tar is larger than {self.limit} bytes")
        self.h.update(data)
        return data

    def drain(self) -> str:
        while self.read(CHUNK):
            pass
        return "sha256:" + self.h.hexdigest()


@dataclass
class Stats:
    entries: int = 0
    bytes: int = 0
    skipped_devices: int = 0
    whiteouts: int = 0
    opaque: int = 0


# tarfile reads a pax header or a GNU long name whole (and decodes it),
# before any check of ours sees the member: zeros compress 1000:1, so a
# 32 MiB layer could hold 64 GiB of the host's memory.  Names are at most
# MAX_NAME and xattrs small: 1 MiB is plenty for a real header.
MAX_EXTENDED_HEADER = 1 << 20
_EXTENDED = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE, tarfile.GNUTYPE_LONGNAME,
             tarfile.GNUTYPE_LONGLINK)  # fmt: skip


class _BoundedTarInfo(tarfile.TarInfo):
    def _proc_member(self, tf: tarfile.TarFile) -> tarfile.TarInfo:
        # not a TarError: tarfile ends the archive quietly on some of those
        if self.type in _EXTENDED and self.size > MAX_EXTENDED_HEADER:
            raise UnsafeLayer(
                f"an extended tar header (pax or GNU long name) of {self.size} bytes, "
                f"more than the {MAX_EXTENDED_HEADER} allowed"
            )
        return super()._proc_member(tf)  # type: ignore[misc, no-any-return]


class Budget:
    """What the layers of one image may still unpack (MAX_IMAGE_SIZE),
    shared by the threads that unpack them."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = MAX_IMAGE_SIZE if limit is None else limit
        self.used = 0
        self._lock = threading.Lock()

    def take(self, n: int) -> None:
        with self._lock:
            self.used += n
            over = self.used > self.limit
        if over:
            raise UnsafeLayer(
                f"the image's layers hold more than {self.limit} bytes of files "
                "(MAX_IMAGE_SIZE of sandbox.images.unpack)"
            )


def _write_sparse(fd: int, data: bytes, pos: int) -> None:
    """Write `data` at offset `pos`, skipping the HOLE blocks of zeros."""
    for i in range(0, len(data), HOLE):
        block = data[i : i + HOLE]
        if block == _ZEROS[: len(block)]:
            continue
        view, at = memoryview(block), pos + i
        while view:
            n = os.pwrite(fd, view, at)
            view, at = view[n:], at + n


def _is_whiteout(st: os.stat_result) -> bool:
    """What _whiteout makes (the image's own device nodes are never made)."""
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


class _Extractor:
    def __init__(self, root_fd: int, max_size: int, budget: Budget) -> None:
        self.root = root_fd
        self.max_size = max_size
        self.budget = budget
        self.stats = Stats()
        self._dirs: collections.OrderedDict[str, int] = collections.OrderedDict()
        self._dir_meta: list[tuple[str, int]] = []  # (path, mtime ns): set after their contents

    def close(self) -> None:
        for fd in self._dirs.values():
            os.close(fd)
        self._dirs.clear()

    def _forget_dirs(self, rel: str) -> None:
        """Close the cached fds of `rel` and of every directory under it
        (about to be removed: a later entry must not go into a deleted
        directory).  The others stay open: a caller's `parent` among them,
        whose number a concurrent thread could otherwise get."""
        for key in [k for k in self._dirs if k == rel or k.startswith(rel + "/")]:
            os.close(self._dirs.pop(key))

    def dir_fd(self, rel: str, member: str, create: bool = True) -> int:
        """An fd of the directory `rel` of the layer (made when missing, with
        the missing ones above it: a loop, not a recursion per level)."""
        if rel == "":
            return self.root
        fd = self._dirs.get(rel)
        if fd is not None:
            self._dirs.move_to_end(rel)
            return fd
        parts = rel.split("/")
        have = len(parts)  # the first `have` parts exist
        try:
            while True:
                try:
                    fd = openat2(self.root, "/".join(parts[:have]), os.O_RDONLY | os.O_DIRECTORY)
                    break
                except (FileNotFoundError, NotADirectoryError) as e:
                    if not create:
                        raise
                    if isinstance(e, NotADirectoryError):
                        # `.wh.NAME` then NAME/x without an entry of NAME's
                        # own: made anew below, as such an entry would be
                        k = self._whiteout_in(parts[:have])
                        if k is None:
                            raise
                        have = k + 1
                    have -= 1
                    if have == 0:
                        fd = os.dup(self.root)
                        break
            for name in parts[have:]:
                try:
                    try:
                        os.mkdir(name, 0o755, dir_fd=fd)
                    except FileExistsError:
                        self._dir_over_whiteout(fd, name)
                    sub = openat2(fd, name, os.O_RDONLY | os.O_DIRECTORY)
                finally:
                    os.close(fd)
                fd = sub
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR, errno.EXDEV, errno.EAGAIN, errno.ENOENT):
                raise UnsafeLayer(
                    f"entry {member!r}: its path goes through {self._culprit(rel)!r}, which is not a "
                    f"directory of this layer (a symlink or a file): refused"
                ) from None
            raise
        self._dirs[rel] = fd
        if len(self._dirs) > 32:
            os.close(self._dirs.popitem(last=False)[1])
        return fd

    def _whiteout_in(self, parts: list[str]) -> int | None:
        """The index of the first of `parts` (a path that openat2 found a
        non-directory in: every part before it is a directory, none a
        symlink) that is a whiteout this layer made; None if it is another
        kind of file."""
        bad = self._culprit("/".join(parts))
        try:
            st = os.lstat(bad, dir_fd=self.root)
        except OSError:
            return None
        return bad.count("/") if _is_whiteout(st) else None

    def _dir_over_whiteout(self, parent: int, name: str) -> None:
        """An entry under NAME came without one of NAME's own, after
        `.wh.NAME`: the whiteout becomes this layer's directory, opaque (the
        lower layers' NAME stays deleted), as with an entry of NAME's own."""
        if not _is_whiteout(os.lstat(name, dir_fd=parent)):
            return  # a directory already (or not: openat2 then says so)
        os.unlink(name, dir_fd=parent)
        os.mkdir(name, 0o755, dir_fd=parent)
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
        try:
            os.setxattr(fd, OPAQUE_XATTR, b"y")
        finally:
            os.close(fd)

    def _culprit(self, rel: str) -> str:
        """The first part of `rel` that is not a directory (for the message)."""
        parts = rel.split("/")
        for i in range(1, len(parts) + 1):
            prefix = "/".join(parts[:i])
            try:
                st = os.lstat(prefix, dir_fd=self.root)  # no follow: the last part is what is looked at
            except OSError:
                return prefix
            if not stat.S_ISDIR(st.st_mode):
                return prefix
        return rel

    def _remove(self, parent: int, head: str, name: str) -> None:
        """Remove `name` of the directory `head` (open as `parent`), a whole tree if it is one."""
        try:
            st = os.lstat(name, dir_fd=parent)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            self._forget_dirs(f"{head}/{name}" if head else name)
            trees.remove(name, dir_fd=parent)
        else:
            os.unlink(name, dir_fd=parent)

    def _whiteout(self, parent: int, name: str) -> None:
        """`.wh.NAME` deletes the NAME of the lower layers, never the NAME of
        this layer (the OCI image spec, "Whiteouts": they "MUST only apply to
        resources in lower/parent layers", whatever the order of the tar).
        Overlay reads a 0/0 character device as the deletion.  An entry of
        this layer by that name hides the lower one already; a directory
        must be opaque too, or the lower one's entries show through it."""
        try:
            st = os.lstat(name, dir_fd=parent)
        except FileNotFoundError:
            os.mknod(name, stat.S_IFCHR | 0o600, os.makedev(0, 0), dir_fd=parent)
            return
        if stat.S_ISDIR(st.st_mode):
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
            try:
                os.setxattr(fd, OPAQUE_XATTR, b"y")
            finally:
                os.close(fd)

    def _owner(self, m: tarfile.TarInfo) -> tuple[int, int]:
        if not (0 <= m.uid < 2**32 - 1 and 0 <= m.gid < 2**32 - 1):
            raise UnsafeLayer(f"entry {m.name!r}: owner {m.uid}:{m.gid} out of range")
        return m.uid, m.gid

    @staticmethod
    def _mtime(m: tarfile.TarInfo) -> int:
        return max(0, min(int(m.mtime * 1e9), 2**62))

    @staticmethod
    def _xattrs(fd: int, m: tarfile.TarInfo) -> None:
        for k, v in m.pax_headers.items():
            if not k.startswith("SCHILY.xattr."):
                continue
            name = k[len("SCHILY.xattr.") :]
            if (name.startswith("user.") and not name.startswith("user.overlay.")) or name in XATTRS_KEPT:
                try:
                    os.setxattr(fd, name, v.encode("utf-8", "surrogateescape"))
                except OSError:
                    pass  # not supported here: skipped, as a file system without xattrs would

    def entry(self, m: tarfile.TarInfo, tf: tarfile.TarFile) -> None:
        self.stats.entries += 1
        if self.stats.entries > MAX_ENTRIES:
            raise UnsafeLayer(f"more than {MAX_ENTRIES} entries in one layer")
        rel = clean(m.name)
        uid, gid = self._owner(m)
        mode = m.mode & 0o7777
        if rel == "":
            if m.isdir():
                os.chown(self.root, uid, gid)
                os.chmod(self.root, mode)
            return
        head, _, name = rel.rpartition("/")
        parent = self.dir_fd(head, m.name)
        if name.startswith(WHITEOUT):
            if name == OPAQUE:
                os.setxattr(parent, OPAQUE_XATTR, b"y")
                self.stats.opaque += 1
            elif not name.startswith(WHITEOUT + WHITEOUT):  # .wh..wh.* are aufs internals
                target = name[len(WHITEOUT) :]
                if target in ("", ".", ".."):  # ".wh..." would delete the directory above
                    raise UnsafeLayer(f"entry {m.name!r}: a whiteout of {target!r}")
                self._whiteout(parent, target)
                self.stats.whiteouts += 1
            return
        if m.ischr() or m.isblk():
            self.stats.skipped_devices += 1
            return
        if m.size < 0 or m.size > self.max_size:
            raise UnsafeLayer(f"entry {m.name!r}: {m.size} bytes, more than the {self.max_size} allowed")
        if m.isdir():
            try:
                old: os.stat_result | None = os.lstat(name, dir_fd=parent)
            except FileNotFoundError:
                old = None
            if old is None or not stat.S_ISDIR(old.st_mode):
                self._remove(parent, head, name)
                os.mkdir(name, 0o700, dir_fd=parent)
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent)
            try:
                os.fchown(fd, uid, gid)
                os.fchmod(fd, mode)
                self._xattrs(fd, m)
                if old is not None and _is_whiteout(old):
                    # `.wh.NAME` came first: a new directory, the lower layers' NAME stays deleted
                    os.setxattr(fd, OPAQUE_XATTR, b"y")
            finally:
                os.close(fd)
            self._dir_meta.append((rel, self._mtime(m)))
            return
        self._remove(parent, head, name)
        if m.isreg():
            self.stats.bytes += m.size
            if self.stats.bytes > self.max_size:
                raise UnsafeLayer(f"the layer holds more than {self.max_size} bytes of files")
            self.budget.take(m.size)
            src = tf.extractfile(m)
            assert src is not None
            fd = os.open(
                name,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
                dir_fd=parent,
            )
            try:
                pos = 0
                while pos < m.size:
                    data = src.read(min(CHUNK, m.size - pos))  # whole CHUNKs: HOLE blocks stay aligned
                    if not data:
                        raise DigestMismatch(f"entry {m.name!r}: the tar ends inside the file")
                    _write_sparse(fd, data, pos)
                    pos += len(data)
                os.ftruncate(fd, m.size)  # the size, when the file ends in a hole
                os.fchown(fd, uid, gid)
                os.fchmod(fd, mode)  # after chown, which clears set-id bits
                self._xattrs(fd, m)
                t = self._mtime(m)
                os.utime(fd, ns=(t, t))
            finally:
                os.close(fd)
        elif m.issym():
            if "\0" in m.linkname or len(m.linkname) > MAX_NAME:
                raise UnsafeLayer(f"entry {m.name!r}: a bad symlink target")
            # the target is never followed here; inside the sandbox it resolves in its own root
            os.symlink(m.linkname, name, dir_fd=parent)
            os.chown(name, uid, gid, dir_fd=parent, follow_symlinks=False)
            t = self._mtime(m)
            os.utime(name, ns=(t, t), dir_fd=parent, follow_symlinks=False)
        elif m.islnk():
            target = clean(m.linkname, f"hardlink {m.name!r} to")
            thead, _, tname = target.rpartition("/")
            try:
                tparent = self.dir_fd(thead, m.name, create=False)
                st = os.lstat(tname, dir_fd=tparent)
            except (UnsafeLayer, FileNotFoundError):
                raise UnsafeLayer(
                    f"hardlink {m.name!r} to {m.linkname!r}: the target is not a file of this layer"
                ) from None
            if stat.S_ISDIR(st.st_mode):
                raise UnsafeLayer(f"hardlink {m.name!r} to the directory {m.linkname!r}")
            os.link(tname, name, src_dir_fd=tparent, dst_dir_fd=parent, follow_symlinks=False)
        elif m.isfifo():
            os.mkfifo(name, 0o600, dir_fd=parent)
            os.chown(name, uid, gid, dir_fd=parent, follow_symlinks=False)
            os.chmod(name, mode, dir_fd=parent)
        else:
            raise UnsafeLayer(f"entry {m.name!r}: unsupported tar entry type {m.type!r}")

    def finish(self) -> None:
        """Directory mtimes last: adding their entries changed them."""
        for rel, t in reversed(self._dir_meta):
            try:
                fd = openat2(self.root, rel, os.O_RDONLY | os.O_DIRECTORY)
            except OSError:
                continue  # removed or replaced by a later entry
            try:
                os.utime(fd, ns=(t, t))
            finally:
                os.close(fd)


def unpack(
    blob: str,
    dest: str,
    diff_id: str | None,
    max_size: int = MAX_LAYER_SIZE,
    progress: Callable[[int], None] | None = None,
    budget: Budget | None = None,
) -> Stats:
    """Unpack the layer blob at `blob` into the existing empty directory
    `dest`; the uncompressed stream must hash to `diff_id` (when given).
    `budget` is the image's, when its other layers count too.  On any
    error the caller removes `dest`."""
    root = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    ex = _Extractor(root, max_size, budget if budget is not None else Budget())
    try:
        with open(blob, "rb") as f:
            stream = _Decompressed(f, limit=max_size + (MAX_ENTRIES * 1024))
            try:
                # stream mode: one pass, nothing seeks; closed with the blob file
                tf = tarfile.open(fileobj=stream, mode="r|", errorlevel=2, tarinfo=_BoundedTarInfo)  # type: ignore[call-overload]  # noqa: SIM115
                reported = 0
                while True:
                    m = tf.next()
                    if m is None:
                        break
                    tf.members.clear()  # stream mode: do not keep every header
                    try:
                        ex.entry(m, tf)
                    except OSError as e:
                        raise ImageError(f"layer entry {m.name[:200]!r}: {e.strerror or e}") from None
                    if progress is not None and stream.n - reported >= CHUNK:
                        reported = stream.n
                        progress(reported)
            except tarfile.TarError as e:
                raise UnsafeLayer(f"not a valid tar: {e}") from None
            got = stream.drain()
        if diff_id is not None and got != diff_id:
            raise DigestMismatch(f"layer diff_id: the uncompressed content hashes to {got}, not {diff_id}")
        ex.finish()
        return ex.stats
    finally:
        ex.close()
        os.close(root)
