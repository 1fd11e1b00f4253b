"""Small file helpers shared by the v1 and v2 backends: cgroupfs files are
tiny and answer at once, so plain reads and writes are fine everywhere
(also in the async front end)."""

from __future__ import annotations

import errno
import os
import signal
import time
from collections.abc import Callable

KILL_WAIT = 2.0  # seconds for SIGKILLed processes to leave a cgroup


def write(path: str, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def read(path: str) -> str:
    with open(path, "rb") as f:
        return f.read().decode("ascii", "replace")


def read_int(path: str, default: int = 0) -> int:
    try:
        text = read(path).strip()
    except FileNotFoundError:
        return default
    return default if text == "max" else int(text)


def to_int(text: str, default: int = 0) -> int:
    """A number file's content; empty (a missing file) or "max": default."""
    text = text.strip()
    return default if not text or text == "max" else int(text)


def keyed(path: str) -> dict[str, int]:
    """A "key value" file (memory.events, pids.events, cpu.stat, oom_control)."""
    try:
        return parse_keyed(read(path))
    except FileNotFoundError:
        return {}


def parse_keyed(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in text.splitlines():
        k, _, v = line.partition(" ")
        if v.strip().lstrip("-").isdigit():
            out[k] = int(v)
    return out


def pids(procs_file: str) -> list[int]:
    try:
        return [int(x) for x in read(procs_file).split()]
    except FileNotFoundError:
        return []


def kill_listed(procs_file: str, listing: Callable[[str], list[int]] | None = None) -> None:
    """SIGKILL every process the file lists until it lists none: a fork
    racing the loop is caught on the next round (the pids limit bounds it).

    Signalled through pidfds, each opened and then found in the file again:
    a listed process that exits before its pidfd is opened frees its pid,
    and a plain kill(pid) could then hit whatever host process got that pid
    meanwhile.  A pidfd names one process for good, and the second listing
    shows it is (still) in the group.  `listing` reads the file (pids();
    a test's script of what it shows)."""
    listing = listing or pids
    deadline = time.monotonic() + KILL_WAIT
    while True:
        listed = listing(procs_file)
        if not listed:
            return
        fds: dict[int, int] = {}
        try:
            # once each: a v1 cgroup.procs may list a pid more than once
            # (one per thread, in the kernel's words "not guaranteed to be
            # free of duplicates"), and a second pidfd would be lost
            for pid in dict.fromkeys(listed):
                try:
                    fds[pid] = os.pidfd_open(pid)
                except ProcessLookupError:
                    pass  # gone already
                except OSError as e:
                    # EINVAL: no thread group (any more), or a listed 0 (an
                    # exiting process whose pid is detached already, seen on
                    # v2): as gone
                    if e.errno != errno.EINVAL:
                        raise
            still = set(listing(procs_file))
            for pid, fd in fds.items():
                if pid in still:
                    try:
                        signal.pidfd_send_signal(fd, signal.SIGKILL)
                    except ProcessLookupError:
                        pass  # exited meanwhile: its pidfd names no other
        finally:
            for fd in fds.values():
                os.close(fd)
        if time.monotonic() > deadline:
            return
        time.sleep(0.001)


def rmdir(path: str, tries: int = 50) -> bool:
    """Remove a cgroup directory; False while processes are still in it."""
    for _ in range(tries):
        try:
            os.rmdir(path)
            return True
        except FileNotFoundError:
            return True
        except OSError as e:
            if e.errno != errno.EBUSY:
                raise
        if tries > 1:
            time.sleep(0.002)  # its last processes are being reaped
    return False


def own_path(hierarchy: str) -> str:
    """This process's cgroup in a hierarchy ("memory", or "" for cgroup2),
    from /proc/self/cgroup."""
    for line in read("/proc/self/cgroup").splitlines():
        _, controllers, path = line.split(":", 2)
        if hierarchy in controllers.split(",") or (hierarchy == "" and controllers == ""):
            return path
    raise LookupError(hierarchy)
