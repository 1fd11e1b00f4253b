"""Walking and removing directory trees of any depth.

A layer tree is untrusted content, and the store's tmp/ may hold a tree no
check ever saw (unpacked by an older version, or built by a recipe).  Python
3.11's os.walk and shutil.rmtree recurse once per directory level, so a tree
deeper than the recursion limit (about 1000) raised RecursionError in
`images --verify`, in every cleanup and in `sandbox gc`, and stayed for
good.  Here the walk is a loop: it holds at most two directory fds (a stack
of one fd per level would run out of fds first), goes down by name and back
up through "..", and checks on the way up that ".." is the directory it came
from (device and inode), so a tree moved meanwhile is an error, never a
removal elsewhere.  It never follows a symlink and never crosses into
another file system (a mount left inside a recipe's tree is an error, not
the mounted files removed)."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

# on_entry(fd of the directory, its entry): called once per entry below the top
OnEntry = Callable[[int, os.DirEntry[str]], None]
# on_leave(fd of the parent, name): a directory below the top, all its entries seen
OnLeave = Callable[[int, str], None]


def _entries(fd: int, on_entry: OnEntry) -> list[str]:
    """Call on_entry for each entry of the directory `fd`; the names of its subdirectories."""
    with os.scandir(fd) as it:
        entries = list(it)
    subdirs = []
    for e in entries:
        if e.is_dir(follow_symlinks=False):
            subdirs.append(e.name)
        on_entry(fd, e)
    return subdirs


def walk(fd: int, on_entry: OnEntry, on_leave: OnLeave | None = None) -> None:
    """Depth first over everything below the directory `fd` (which stays
    open and where it is).  A subdirectory that on_entry removed is skipped."""
    top = os.fstat(fd)
    cur = os.dup(fd)
    # per level above the current one: (its subdirectories left to visit,
    # its (st_dev, st_ino), the name of the one we are in)
    stack: list[tuple[list[str], tuple[int, int], str]] = []
    here = (top.st_dev, top.st_ino)
    try:
        pending = _entries(cur, on_entry)
        while True:
            if pending:
                name = pending.pop()
                try:
                    sub = os.open(name, _DIR_FLAGS, dir_fd=cur)
                except FileNotFoundError:
                    continue
                st = os.fstat(sub)
                if st.st_dev != top.st_dev:
                    os.close(sub)
                    raise OSError(errno.EXDEV, "another file system is mounted there", name)
                os.close(cur)
                cur = sub
                stack.append((pending, here, name))
                here = (st.st_dev, st.st_ino)
                pending = _entries(cur, on_entry)
                continue
            if not stack:
                return
            pending, here, name = stack.pop()
            up = os.open("..", _DIR_FLAGS, dir_fd=cur)
            st = os.fstat(up)
            os.close(cur)
            cur = up
            if (st.st_dev, st.st_ino) != here:
                raise OSError(errno.ESTALE, "the tree was moved while it was walked", name)
            if on_leave is not None:
                on_leave(cur, name)
    finally:
        os.close(cur)


def summary(path: str) -> dict[str, int]:
    """Entries below `path` and bytes of its regular files (lstat: links are not followed)."""
    out = {"entries": 0, "bytes": 0}

    def count(_fd: int, e: os.DirEntry[str]) -> None:
        out["entries"] += 1
        st = e.stat(follow_symlinks=False)
        if stat.S_ISREG(st.st_mode):
            out["bytes"] += st.st_size

    fd = os.open(path, _DIR_FLAGS)
    try:
        walk(fd, count)
    finally:
        os.close(fd)
    return out


def _unlink(fd: int, e: os.DirEntry[str]) -> None:
    if not e.is_dir(follow_symlinks=False):
        try:
            os.unlink(e.name, dir_fd=fd)
        except FileNotFoundError:
            pass


def _rmdir(fd: int | None, name: str | os.PathLike[str]) -> None:
    try:
        os.rmdir(name, dir_fd=fd)
    except FileNotFoundError:
        pass


def remove(path: str | os.PathLike[str], dir_fd: int | None = None) -> None:
    """Remove `path` (relative to `dir_fd` when given): a whole tree, a file
    or a symlink (not its target); nothing there is no error.  Raises the
    OSError that stopped it, with what could be removed removed."""
    try:
        st = os.lstat(path, dir_fd=dir_fd)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        try:
            os.unlink(path, dir_fd=dir_fd)
        except FileNotFoundError:
            pass
        return
    fd = os.open(path, _DIR_FLAGS, dir_fd=dir_fd)
    try:
        walk(fd, _unlink, _rmdir)
    finally:
        os.close(fd)
    _rmdir(dir_fd, path)
