"""The gatekeeper of the compiled core: the only importer of
``sandbox._sandbox_cext``.  It refuses a build whose ABI differs from this
Python code, holds the process-wide resources the launcher needs (the init
program in a sealed memfd, user namespaces that carry each id mapping) and
turns every C failure record into a Python exception."""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from . import interrupts
from .errors import HostError, LaunchError

ABI_VERSION = 6

try:
    from ._sandbox_cext import ffi as ffi  # also for execio.py and fsbatch.py
    from ._sandbox_cext import lib as lib
except ImportError as e:  # pragma: no cover - depends on the install
    raise HostError(
        f"the compiled core is missing ({e}); install the package with "
        "`pip install .` so that its C part is built"
    ) from e

if lib.sbx_abi_version() != ABI_VERSION:  # pragma: no cover
    raise HostError(
        f"the compiled core speaks ABI {lib.sbx_abi_version()}, this Python code {ABI_VERSION}: "
        "reinstall the package so both come from the same build"
    )

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
ALL_NAMESPACES = (
    CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET
)

MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8

# enum sbx_launch_stage in proto.h, with what to change when it fails there.
_STAGES: dict[int, tuple[str, str]] = {
    1: ("socket setup", "the process may be out of file descriptors"),
    2: ("preparing a mount tree", "check that the path exists and is a directory on a local file system"),
    3: ("idmapping a layer", "the file system must support idmapped mounts (ext4, xfs, btrfs, tmpfs)"),
    4: (
        "clone",
        "user namespaces may be disabled: check `sysctl user.max_user_namespaces` "
        "and AppArmor's kernel.apparmor_restrict_unprivileged_userns",
    ),
    5: (
        "writing the id maps",
        "the host id range must be free to map: run as root, "
        "or give the user a range in /etc/subuid and /etc/subgid",
    ),
    6: ("becoming container root", ""),
    7: ("passing fds", ""),
    8: ("exec of the init", "the package's sandbox-init may be damaged: reinstall"),
    9: ("sending the launch plan", "the plan is too large: use fewer layers or mounts"),
    10: ("joining the template mount namespace", ""),
    11: (
        "making the template mount namespace",
        "it needs unshare(CLONE_NEWNS), fsopen(tmpfs) and pivot_root, as root (kernel 5.2 or later)",
    ),
}


@dataclass(frozen=True)
class Tree:
    """A host directory (or file) handed to the sandbox as a detached mount."""

    path: str
    recursive: bool = False
    attr_set: int = 0
    idmap: bool = False


_me = os.getpid()  # kept by the fork hook below: `mine` is asked per exec


def _forked() -> None:
    global _me
    _me = os.getpid()


os.register_at_fork(after_in_child=_forked)


@dataclass
class Launched:
    pid: int
    pidfd: int
    ctl: socket.socket
    netns: int | None = None  # the network namespace it runs in, when it may be used again
    # Held while a C call sends on ctl by its number (sandbox/execio.py):
    # closed meanwhile, the number could be reused by another socket.  Also
    # guards the reply channels below.
    sending: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # exec()'s reply channels, which the init keeps (sandbox/execio.py): free
    # ones as (number, our end), numbers whose socket is gone, the next new one
    channels: list[tuple[int, int]] = field(default_factory=list, repr=False)
    dropped: list[int] = field(default_factory=list, repr=False)
    next_channel: int = 0
    # called once the init is reaped: e.g. its leased id range (sandbox/idranges.py)
    release: Callable[[], None] | None = field(default=None, repr=False)
    # The process that launched it, the only one that may kill it: a forked
    # child inherits the fds (and the objects), not the sandbox.
    owner: int = field(default_factory=lambda: _me, repr=False)
    queued: bool = field(default=False, repr=False)  # killed, and handed to the reaper (reaper.py)
    done: bool = field(default=False, repr=False)  # reaped, and what came after done

    @property
    def mine(self) -> bool:
        return self.owner == _me


def _close_fd(fd: int) -> None:
    os.close(fd)


# Where a reaped sandbox's network namespace goes: netpool.py takes it back.
netns_sink: Callable[[int], None] = _close_fd


def kill(launched: Launched) -> None:
    """SIGKILL to the init: the kernel then kills its whole pid namespace,
    and its mount namespace with every tmpfs goes.

    The dying init is first kept off the caller's CPU: woken by the signal,
    it was placed there and preempted the caller for its whole teardown
    (unmounting, ~0.15-0.3 ms here, seen with ftrace: close() took 0.28 ms
    after idleness).  Elsewhere it dies beside the caller, at the same
    priority (a lower one could starve teardowns under load).  Both in one
    C call (sbx_kill_init)."""
    rc = lib.sbx_kill_init(launched.pidfd, launched.pid)
    if rc < 0:
        raise OSError(-rc, f"killing the sandbox's init: {os.strerror(-rc)}")


def reap(launched: Launched) -> None:
    """Kill the init and wait for it; close its fds (see collect).  Once
    done, a second call does nothing."""
    if launched.pidfd >= 0:
        kill(launched)
        collect(launched)


def collect(launched: Launched) -> None:
    """Wait for an init that was killed; close its fds.  Once the init is
    reaped, no process of the sandbox is left (the kernel waits for them all
    before the init's exit completes): its network namespace goes to
    `netns_sink`."""
    try:
        os.waitid(os.P_PIDFD, launched.pidfd, os.WEXITED)
    except ChildProcessError:
        pass
    _let_go(launched, netns_sink)
    release, launched.release = launched.release, None
    if release is not None:
        release()  # no process of it is left: its ids may be another's now


def forget(launched: Launched) -> None:
    """Close the fds of a sandbox another process owns (inherited over a
    fork): neither kill it nor give back what it holds, which is the
    owner's.  The init outlives this: the owner still holds its socket."""
    _let_go(launched, os.close)
    launched.release = None


def _let_go(launched: Launched, netns_to: Callable[[int], None]) -> None:
    """Close this process's fds of the init (pidfd, control socket, reply
    channels); its network namespace goes to `netns_to`."""
    pidfd, launched.pidfd = launched.pidfd, -1  # never killed, nor closed, again
    if pidfd >= 0:
        os.close(pidfd)
    with launched.sending:
        launched.ctl.close()
        for _, fd in launched.channels:
            os.close(fd)
        launched.channels.clear()
    netns, launched.netns = launched.netns, None
    if netns is not None:
        netns_to(netns)


_lock = threading.Lock()
_init_fd: int | None = None


@dataclass
class _KeptNs:
    """A kept namespace (an idmapping user namespace, the template mount
    namespace): its fd, its (st_dev, st_ino), and how many launches use the
    fd now (one in use is never closed)."""

    fd: int
    ident: tuple[int, int]
    users: int = 0

    def intact(self) -> bool:
        """Whether the fd is still this namespace: host code may have closed
        the number, or dup2'd onto it, not knowing it was ours."""
        try:
            st = os.fstat(self.fd)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self.ident


# per (uid_map, gid_map), least recently used first
_userns: OrderedDict[tuple[str, str], _KeptNs] = OrderedDict()
# Idle ones kept beyond this many are closed, least recently used first:
# with idmap="auto" a burst of sandboxes leaves one per range it leased, and
# each is an fd of the host process for its life (RLIMIT_NOFILE is 1024 by
# default).  Sequential sandboxes reuse a few ranges (idranges.py).
USERNS_KEEP = 64


_mntns: _KeptNs | None = None  # the template mount namespace (sbx_make_mntns), made once


def _template_mntns() -> int:
    """The fd of the mount namespace every init's is copied from: three
    mounts instead of the host's whole table (launch_unsafe.c, helper_main).
    Made again when the kept fd is no longer it (host code closed or
    dup2'd onto the number, not knowing it was ours)."""
    global _mntns
    with _lock:
        if _mntns is None or not _mntns.intact():
            out = ffi.new("struct sbx_launched *")
            fd = lib.sbx_make_mntns(out)
            if fd < 0:
                raise _launch_error(out, [])
            st = os.fstat(fd)
            _mntns = _KeptNs(fd, (st.st_dev, st.st_ino))
        return _mntns.fd


def _template_lost() -> bool:
    """After a launch could not join the template: forget it (not closed:
    the number may not be ours now), to be made again.  Its fd passed
    _template_mntns's check, and was not it: namespaces of every type share
    one pool of inode numbers, so a number once the template's can show the
    same (st_dev, st_ino) as another namespace's fd."""
    global _mntns
    with _lock:
        if _mntns is None:
            return False
        _mntns = None
        return True


def _init_memfd() -> int:
    """The init program, copied once into a sealed memfd: what the sandbox
    execs is not a host file it could reach or rewrite (CVE-2019-5736)."""
    global _init_fd
    with _lock:
        if _init_fd is None:
            data = resources.files("sandbox").joinpath("sandbox-init").read_bytes()
            fd = os.memfd_create("sandbox-init", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
            try:
                os.write(fd, data)
                seals = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
                fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
            except BaseException:
                os.close(fd)
                raise
            _init_fd = fd
        return _init_fd


def _userns_take(uid_map: str, gid_map: str) -> _KeptNs:
    """A user namespace with these maps, for a launch's idmapped mounts
    (~110 us to make, so kept per map): give it back with _userns_done."""
    key = (uid_map, gid_map)
    with _lock:
        got = _userns.get(key)
        if got is None:
            out = ffi.new("struct sbx_launched *")
            fd = lib.sbx_make_userns(uid_map.encode(), gid_map.encode(), out)
            if fd < 0:
                raise _launch_error(out, [])
            st = os.fstat(fd)
            got = _userns[key] = _KeptNs(fd, (st.st_dev, st.st_ino))
        _userns.move_to_end(key)
        got.users += 1
        return got


def _userns_done(got: _KeptNs) -> None:
    """The launch that took `got` is over; idle ones beyond USERNS_KEEP go."""
    with _lock:
        got.users -= 1
        extra = len(_userns) - USERNS_KEEP
        if extra <= 0:
            return
        for k in [k for k, v in _userns.items() if v.users == 0][:extra]:
            old = _userns.pop(k)
            if old.intact():  # else the number is not ours now (_userns_lost)
                os.close(old.fd)


def _userns_lost(uid_map: str, gid_map: str) -> bool:
    """After an idmapping failed: whether the kept fd is no longer that
    user namespace (closed, or its number reused: code of the host process
    that closed or dup2'd onto a number it did not own).  Then it is
    forgotten (not closed: the number is not ours now) and made again."""
    key = (uid_map, gid_map)
    with _lock:
        got = _userns.get(key)
        if got is None or got.intact():
            return False
        del _userns[key]
        return True


def _launch_error(out: Any, trees: Sequence[Tree]) -> LaunchError:
    step, hint = _STAGES.get(out.stage, (f"stage {out.stage}", ""))
    detail = ""
    if out.stage == 2 and 0 <= out.index < len(trees):
        detail = trees[out.index].path
        if out.err == errno.EINVAL and trees[out.index].idmap:
            step, hint = _STAGES[3]
    return LaunchError(step, out.err, detail, hint)


def launch(
    plan: bytes,
    trees: Sequence[Tree],
    uid_map: str,
    gid_map: str,
    flags: int = ALL_NAMESPACES,
    netns_fd: int = -1,
    spin: bool = True,
    retry: bool = True,
) -> Launched:
    """Clone the sandbox's init; returns once it runs (its setup may still fail:
    the caller waits for READY on the control socket).  `spin`: wait for the
    child by spinning first (~0.3 ms less than sleeping and being woken, here;
    False for a start made ahead, where the CPU matters more than the wait).
    `retry`: once more, with a new idmapping user namespace, if the kept
    one was lost (_userns_lost)."""
    userns = _userns_take(uid_map, gid_map) if any(t.idmap for t in trees) else None
    got = None
    try:
        fd = -1 if userns is None else userns.fd
        got = _launch(plan, trees, uid_map, gid_map, flags, netns_fd, spin, fd)
        if userns is not None:
            _userns_done(userns)
    except BaseException:
        with interrupts.deferred():
            if userns is not None and got is None:
                _userns_done(userns)
            if isinstance(got, Launched):
                reap(got)  # interrupted after the launch: no live init left unheld
        raise
    if isinstance(got, Launched):
        return got
    idmap_failed = (
        got.stage == 2
        and got.err in (errno.EBADF, errno.EINVAL)
        and 0 <= got.index < len(trees)
        and trees[got.index].idmap
    )
    if retry and idmap_failed and _userns_lost(uid_map, gid_map):
        return launch(plan, trees, uid_map, gid_map, flags, netns_fd, spin, retry=False)
    if retry and got.stage == 10 and got.err == errno.EINVAL and _template_lost():
        return launch(plan, trees, uid_map, gid_map, flags, netns_fd, spin, retry=False)
    raise _launch_error(got, trees)


def _launch(
    plan: bytes,
    trees: Sequence[Tree],
    uid_map: str,
    gid_map: str,
    flags: int,
    netns_fd: int,
    spin: bool,
    userns: int,
) -> Launched | Any:
    """One sbx_launch: the Launched, or the C side's `struct sbx_launched`
    saying where it failed."""
    keep = []
    ctrees = ffi.new("struct sbx_tree[]", max(len(trees), 1))
    for i, t in enumerate(trees):
        path = ffi.new("char[]", os.fsencode(t.path))
        keep.append(path)
        ctrees[i].path = path
        ctrees[i].recursive = int(t.recursive)
        ctrees[i].attr_set = t.attr_set
        ctrees[i].attr_clr = 0
        ctrees[i].userns_fd = userns if t.idmap else -1
    cplan = ffi.from_buffer(plan)
    args = ffi.new("struct sbx_launch *")
    args.init_fd = _init_memfd()
    args.clone_flags = flags
    umap, gmap = ffi.new("char[]", uid_map.encode()), ffi.new("char[]", gid_map.encode())
    args.uid_map, args.gid_map = umap, gmap
    args.plan = cplan
    args.plan_len = len(plan)
    args.trees = ctrees
    args.ntrees = len(trees)
    # The parent-death signal follows the thread that cloned: use it only from
    # the main thread.  The control socket's EOF covers every case.
    args.pdeathsig = int(threading.current_thread() is threading.main_thread())
    args.netns_fd = netns_fd
    args.mntns_fd = _template_mntns()
    args.spin = int(spin)
    out = ffi.new("struct sbx_launched *")
    # What it returns is made first, with a socket the init's control fd is
    # then moved onto: a KeyboardInterrupt is raised between two bytecodes,
    # also right after a call returns, and one raised after sbx_launch (or
    # within the Launched's construction) left a live init nothing held.
    # From here on every step either cannot be interrupted (attribute
    # stores) or is undone by the handler below.
    ctl = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    launched = Launched(-1, -1, ctl)
    try:
        if lib.sbx_launch(args, out) < 0:
            ctl.close()
            return out
        os.dup2(out.ctl, ctl.fileno(), inheritable=False)
    except BaseException:
        with interrupts.deferred():
            if out.pidfd >= 0:
                lib.sbx_kill_init(out.pidfd, out.pid)
                try:
                    os.waitid(os.P_PIDFD, out.pidfd, os.WEXITED)
                except ChildProcessError:
                    pass
                os.close(out.pidfd)
            ctl.close()
        raise
    finally:
        if out.ctl >= 0:
            os.close(out.ctl)  # on ctl's number now, or the init is gone
    launched.pid, launched.pidfd = out.pid, out.pidfd
    return launched


def own_fs() -> bool:
    """Give the calling thread a root and cwd of its own (unshare(CLONE_FS)),
    for good: its launches then join the template mount namespace
    themselves instead of through a helper task (launch_unsafe.c,
    clone_direct).  Only for a thread of ours that never changes directory
    and uses absolute paths (the warm pool's): a chdir of another thread no
    longer moves it."""
    return int(lib.sbx_own_fs()) == 0


def launches_directly() -> bool:
    """Whether the calling thread's launches skip the helper (own_fs, and no
    thread it started shares its fs state since: those fall back to it)."""
    return bool(lib.sbx_fs_own())


def make_netns() -> int:
    """A new network namespace with `lo` up, as an fd; -errno on failure."""
    return int(lib.sbx_make_netns(ffi.NULL))


def make_checked_netns() -> tuple[int, tuple[int, ...]]:
    """make_netns, with `netns_files` of the namespace: (fd, their fds);
    (-errno, ()) on failure.  They hold the namespace: close them with its fd."""
    stats = ffi.new("int[]", lib.SBX_NETNS_STATS)
    fd = int(lib.sbx_make_netns(stats))
    return fd, tuple(int(x) for x in stats) if fd >= 0 else ()


def netns_files() -> tuple[int, ...]:
    """What `netns_idle` reads of the calling thread's network namespace,
    opened in it: its sockstat, sockstat6 and ip6_flowlabel files, and a
    netlink socket for the TCP metrics flush.  OSError on failure."""
    stats = ffi.new("int[]", lib.SBX_NETNS_STATS)
    e = int(lib.sbx_netns_files(stats))
    if e < 0:
        raise OSError(-e, os.strerror(-e))
    return tuple(int(x) for x in stats)


def netns_idle(stats: tuple[int, ...]) -> bool:
    """Whether nothing is left in the network namespace whose files `stats`
    are (netns_files): no socket of any family but ours, no TIME_WAIT, no
    fragment queue, no IPv6 flow label (an unreadable one counts as busy);
    and then its TCP metrics are flushed (a failure counts as busy)."""
    if len(stats) != lib.SBX_NETNS_STATS:
        raise ValueError(f"netns_idle takes {lib.SBX_NETNS_STATS} fds (netns_files), got {len(stats)}")
    return int(lib.sbx_netns_idle(stats)) == 1
