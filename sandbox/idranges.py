"""A range of host ids for one sandbox alone (`idmap="auto"`).

With one shared range, every sandbox is the same host user: what the kernel
counts per user (inotify instances, pending signals, POSIX message queue
bytes, pipe buffer pages) is one budget for all of them, so one sandbox can
use up another's; and a process that got out of one would be the owner of
every other sandbox's processes and files.  A leased range makes each
sandbox a host user of its own.

Ranges are blocks of 65,536 ids in 524288..1879048191 (0x80000-0x6FFFFFFF,
the span systemd documents for container ids, which systemd-nspawn's
`--private-users=pick` also uses), but any block that holds a uid or gid
of the host's /etc/passwd or /etc/group, a range of /etc/subuid or
/etc/subgid, or the caller's uid.  A block is leased by holding an flock
on /var/lib/sandbox/run/ids/START (any process of this package sees it; a
killed one's lock goes with it), from the launch until the init is reaped:
then no process of the sandbox is left.  The file stays, written to, and
its mtime is the release time that every process sees: the lowest free
block is taken that no process released in the last COOL seconds (a file
of a process that died holding it says "held": free at once).  So sandboxes
one after another reuse the same few ranges (the idmapped mounts' user
namespaces are kept per range, up to 64 idle ones, sandbox/_core.py), and
the files are about as many as the most blocks leased at once; gc() removes the
free ones.

The lease directory is one per host, whatever $SANDBOX_HOME says: host
ids are the host's, not a store's.  Under $SANDBOX_HOME, a process with
another home (another user of the library with a store of its own, a test
session beside a production one) saw none of our leases and took the same
lowest free block: two tenants' sandboxes were one host user, each the
owner of the other's processes and files.

Ranges keep sandboxes running at once apart, not one sandbox from the
next: what one left in a writable host mount (files of its host uid, mode
0600 too) is the next one's on the same range."""

from __future__ import annotations

import errno
import fcntl
import os
import threading
import time
from dataclasses import dataclass

from . import interrupts
from .errors import HostError
from .spec import CONTAINER_IDS, IdMap

FIRST = 0x80000
LAST = 0x6FFFFFFF  # the last id of the span
BLOCKS = (LAST + 1 - FIRST) // CONTAINER_IDS
_HOST_DBS = ("/etc/passwd", "/etc/group", "/etc/subuid", "/etc/subgid")

_lock = threading.Lock()
_held: set[int] = set()  # blocks this process holds (not tried again)
# A released block is not leased again, by any process, for COOL seconds:
# the kernel frees a dead sandbox's IPC namespace (and with it the POSIX
# message queue bytes charged to its host user) in deferred work, measured
# ~11-13 ms after the init is reaped here, longer under load; a sandbox
# given the range at once could not make a queue.  The release time is the
# lease file's mtime (see _cooling()), not this process's memory: another
# process that took the range at once had the same failure.
COOL = 0.25  # seconds
# Blocks this process released, and when (monotonic): skipped without a
# look at their files.  Back to back a range cools for ~125 sandboxes; a
# look at each file (open, flock, two stats, close) made a lease cost twice
# the launcher thread's CPU (0.7 -> 1.3 ms per sandbox, measured).  The
# file's mtime is for the blocks other processes released.
_released: dict[int, float] = {}
RECHECK = 1.0  # seconds between looks at the host's user files
_checked = 0.0
_taken: tuple[tuple[tuple[int, int], ...], frozenset[int]] | None = None  # (db stamps, blocks in use)


# The default home's path (beside the network state's /var/lib/sandbox/run/net,
# one per host for the same reason): processes of older versions with the
# default home and this one lock the same files.  Not /run: it is not a
# tmpfs on every host (nor in every container), and a lease needs no
# clearing at boot, since a lock never outlives its process: a file left
# behind is a free block (gc() tidies it).
ROOT = "/var/lib/sandbox/run/ids"


def root() -> str:
    return ROOT


@dataclass
class Lease:
    """A block held for one sandbox: release() once its init is reaped."""

    idmap: IdMap
    fd: int
    path: str

    def release(self) -> None:
        if self.fd < 0:
            return
        # written while still locked: the content says "released", the
        # mtime when, to every process (kept, not unlinked, for that)
        try:
            os.pwrite(self.fd, RELEASED, 0)
        except OSError:
            pass  # a full disk: the block is free at once, as a dead holder's
        os.close(self.fd)
        self.fd = -1
        with _lock:
            b = _block(self.idmap.host_start)
            _held.discard(b)
            _released[b] = time.monotonic()


def for_launch(idmap: IdMap | str) -> tuple[str, Lease | None]:
    """The uid map of a launch, and the lease it holds if `idmap` is AUTO_IDS."""
    if isinstance(idmap, IdMap):
        return idmap.uid_map(), None
    got = lease()
    try:
        return got.idmap.uid_map(), got
    except BaseException:
        with interrupts.deferred():
            got.release()  # interrupted: not a lease held by nothing
        raise


def _block(host_start: int) -> int:
    return (host_start - FIRST) // CONTAINER_IDS


# What a lease file says: written over each other in place, the same size.
# Not a truncate to empty for "held": on ext4 a close after one starts
# writeback (auto_da_alloc), and the two cost the launcher's and the
# reaper's threads ~80 us of CPU per sandbox back to back (perf).  A file
# left "held" (or empty: new, or an older version's) by a dead holder is free.
RELEASED = b"released\n"
HELD = b"held    \n"


def _cooling(fd: int, st: os.stat_result) -> bool:
    """A lease file released less than COOL seconds ago.  The mtime is the
    wall clock: one set back leaves an mtime ahead of now, taken as cooled
    (the block is then free at once, as before cooling)."""
    age = time.time_ns() - st.st_mtime_ns
    return 0 <= age < COOL * 1e9 and os.pread(fd, len(RELEASED), 0) == RELEASED


def _stamps() -> tuple[tuple[int, int], ...]:
    out = []
    for p in _HOST_DBS:
        try:
            st = os.stat(p)
            out.append((st.st_mtime_ns, st.st_size))
        except OSError:
            out.append((0, -1))
    return tuple(out)


def _host_blocks() -> frozenset[int]:
    """Blocks that hold an id the host uses (its users and groups, its
    subordinate ranges, the caller): never leased.  Read again when one of
    the files changes (looked at once a second at most)."""
    global _taken, _checked
    now = time.monotonic()
    if _taken is not None and now - _checked < RECHECK:
        return _taken[1]
    _checked = now
    stamps = _stamps()
    if _taken is not None and _taken[0] == stamps:
        return _taken[1]
    spans: list[tuple[int, int]] = [(os.geteuid(), 1)]
    for p in _HOST_DBS:
        try:
            with open(p, "rb") as f:
                lines = f.read(4 << 20).decode("utf-8", "replace").splitlines()
        except OSError:
            continue
        sub = p.startswith("/etc/sub")
        for line in lines:
            fields = line.split(":")
            if sub and len(fields) >= 3 and fields[1].isdigit() and fields[2].isdigit():
                spans.append((int(fields[1]), int(fields[2])))
            elif not sub and len(fields) >= 3 and fields[2].isdigit():
                spans.append((int(fields[2]), 1))
    blocks: set[int] = set()
    for start, count in spans:
        lo, hi = max(start, FIRST), min(start + count - 1, LAST)
        if lo <= hi:
            blocks.update(range(_block(lo), _block(hi) + 1))
    _taken = (stamps, frozenset(blocks))
    return _taken[1]


def lease() -> Lease:
    """The lowest free block, held until release().  HostError when every
    block is in use."""
    home = root()
    skip = _host_blocks()
    now = time.monotonic()
    with _lock:
        if len(_released) > 64:  # forget those cooled down
            for c in [c for c, t in _released.items() if now - t >= COOL]:
                del _released[c]
    b = -1
    while True:
        with _lock:  # the next candidate, found in one hold of the lock
            b = next(
                (
                    c
                    for c in range(b + 1, BLOCKS)
                    if c not in _held and c not in skip and now - _released.get(c, -COOL) >= COOL
                ),
                -1,
            )
            if b < 0:
                break
            _held.add(b)  # this thread tries it; no other thread of ours does
        got = None
        try:
            got = _try(b, home)
        finally:
            if got is None:
                with _lock:
                    _held.discard(b)
        if got is not None:
            return got
    raise HostError(
        f"idmap='auto': all {BLOCKS} ranges of host ids in {FIRST}..{LAST} are in use "
        "(or the host's): close sandboxes, or give idmap=IdMap(host_start)"
    )


def _try(b: int, home: str) -> Lease | None:
    start = FIRST + b * CONTAINER_IDS
    path = os.path.join(home, str(start))
    while True:
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        try:
            fd = os.open(path, flags, 0o600)
        except FileNotFoundError:  # the first lease here: not a mkdir per start
            os.makedirs(home, mode=0o700, exist_ok=True)
            fd = os.open(path, flags, 0o600)
        got = None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    return None  # another process's sandbox has it
                raise
            st = os.fstat(fd)
            try:
                same = os.stat(path, follow_symlinks=False).st_ino == st.st_ino
            except FileNotFoundError:
                same = False
            if same:
                if _cooling(fd, st):
                    return None  # released a moment ago, by whichever process
                os.pwrite(fd, HELD, 0)  # until release() (so a dead holder's is free)
                got = Lease(IdMap(start), fd, path)
                return got
            # else gc() removed it meanwhile: again
        finally:
            if got is None:
                os.close(fd)  # also on an interrupt: a lost fd would hold the lock


def gc() -> list[str]:
    """Remove the lease files no process holds: released ones, once cooled,
    and those of processes that died holding them (their flock went with
    them).  Harmless but untidy: the next lease of a block takes its file
    over.  The blocks removed."""
    home = root()
    try:
        names = sorted(os.listdir(home))
    except FileNotFoundError:
        return []
    out = []
    for n in names:
        path = os.path.join(home, n)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            st = os.fstat(fd)
            if os.stat(path, follow_symlinks=False).st_ino == st.st_ino and not _cooling(fd, st):
                os.unlink(path)
                out.append(n)
        except OSError:
            pass  # held: a live sandbox's; or gone meanwhile
        finally:
            os.close(fd)
    return out
