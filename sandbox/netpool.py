"""Network namespaces made ahead of time, and used again.

Creating a network namespace is the most expensive part of clone here
(~0.4 ms of a ~2 ms start, measured with and without CLONE_NEWNET), and
destroying one costs the kernel's workers as much again (cleanup_net: with
making it, ~1.2 ms of CPU per sandbox here, measured with perf).  So a
background thread keeps a few ready (`lo` up) and the launcher joins one.
When the pool is empty (a burst of starts), the launcher makes a fresh one,
as before: the pool only ever saves time.

A sandbox with no network hands its namespace back when it is reaped
(`_core.reap`: by then none of its processes is left), and the thread puts
it back in the pool if nothing of the sandbox is left in it: no socket of
any family (that covers abstract unix names too), no TIME_WAIT, no fragment
queue, no IPv6 flow label (a label outlives its socket: `_core.netns_idle`).
Its TCP metrics are flushed then: what the kernel learnt of each TCP
peer (RTT, cwnd, both addresses) outlives the sockets, for up to an hour,
and a sandbox picks those addresses (all of 127/8); a later one with
CAP_NET_ADMIN could read them (sandbox/_cext/tcpmetrics.h).  Nothing else
in it can have changed: the namespace belongs to the host's user
namespace, where the sandbox's root has no capability, so its addresses,
routes, sysctls and firewall are ours.
What does carry over are its counters (`/proc/net/snmp`, `lo`'s packet
counts): the next sandbox can see how much the last one sent over its
loopback.  SANDBOX_NETNS_REUSE=0 gives every sandbox a new namespace.

The check reads the namespace's sockstat, sockstat6 and ip6_flowlabel
files, opened inside it when it was made (with the netlink socket of the
flush, which the socket count allows for): a /proc net file stays bound to
the namespace it was opened in, and a read from offset 0 shows it as of now.
With two of them (before the flow labels), a check took ~3 us of CPU in a
loop here, and ~22 us measured around each call between back-to-back
sandbox cycles, where joining the namespace to open them anew (two setns,
two procfs path lookups) took ~32 and ~70 us.  The pool keeps those fds
beside the namespace's, and closes them with it: they hold the namespace as
well."""

from __future__ import annotations

import os
import threading
from collections import deque

from . import _core

TARGET = 4
LOW = 2  # made anyway below this many (unless one handed back waits for its check)
# Kept when handed back idle, ready and waiting for a check together.  More
# are out at once than TARGET back-to-back (the warm pool's sandboxes ahead,
# the running one, the dying ones): with TARGET as the cap, the pool dropped
# returned ones and made new ones in turn, 91 made in 500 cycles (~0.7 ms of
# CPU each, made and destroyed), against none once warm with this cap.
KEEP = 16


class NetnsPool:
    def __init__(self, target: int = TARGET) -> None:
        self._target = target
        self._ready: deque[int] = deque()
        self._lock = threading.RLock()  # entered as `with self._lock` (see interrupts.py)
        self._cond = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._stopped = False  # no thread any more: no permission here, or shutdown()
        self._launching = 0
        self._returned: deque[int] = deque()  # handed back, not yet checked
        self._out = 0  # taken, to be given back
        self._stats: dict[int, tuple[int, ...]] = {}  # namespace fd -> its files for the idle check
        self.reuse = os.environ.get("SANDBOX_NETNS_REUSE", "1") != "0"

    def take(self, returned: bool = True) -> int | None:
        """A namespace fd (the caller closes it, or gives it back if `returned`);
        None where this host does not let us make one, or after shutdown()
        (the launcher then asks clone for a new one)."""
        with self._lock:
            self._launching += 1  # until launched(): no refill meanwhile
            if returned:
                self._out += 1
            fd = self._ready.popleft() if self._ready else None
            if fd is None and self._stopped:
                return None
            if self._thread is None and not self._stopped:
                self._thread = threading.Thread(target=self._fill, name="sandbox-netns", daemon=True)
                self._thread.start()
        if fd is not None:
            if not returned:
                for f in self._stats.pop(fd, ()):  # never checked: the caller closes the namespace alone
                    os.close(f)
            return fd
        # Empty (a burst of starts): make this one now, so that every
        # sandbox gets the same kind of namespace.
        if not returned:
            fd = _core.make_netns()
            return fd if fd >= 0 else None
        fd, stats = _core.make_checked_netns()
        if fd < 0:
            return None
        self._stats[fd] = stats
        return fd

    def launched(self) -> None:
        """The caller's launch is over (its init runs, or it failed): the
        refill may go on.  Making a namespace while a clone and exec run
        slowed that exec from 65 us to 390 us here, so refills wait."""
        with self._lock:
            # never below 0: a launch cut short by an interrupt may say so
            # without its take() having counted it, and one count short the
            # refill would run during the next launch
            self._launching = max(0, self._launching - 1)
            self._cond.notify()

    def give_back(self, fd: int) -> None:
        """A reaped sandbox's namespace (ours now): checked, then used again
        or closed, by the thread."""
        with self._lock:
            self._out = max(0, self._out - 1)
            if self.reuse and self._thread is not None and len(self._returned) + len(self._ready) < KEEP:
                self._returned.append(fd)
                self._cond.notify()
                return
        self._close(fd)

    def shutdown(self) -> None:
        """Stop the thread and close the namespaces the pool holds (those out
        are closed as they come back); launches then make their own."""
        with self._lock:
            self._stopped = True
            self._cond.notify_all()
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(5.0)
        with self._lock:
            held = [*self._ready, *self._returned]
            self._ready.clear()
            self._returned.clear()
        for fd in held:
            self._close(fd)

    def _close(self, fd: int) -> None:
        """Close a namespace, and its check files (netns_files): they hold it as well."""
        for f in (fd, *self._stats.pop(fd, ())):
            os.close(f)

    def _want_new(self) -> bool:
        # with self._lock held.  Below LOW always; up to the target only while
        # no namespace is out: one that is comes back, and one made meanwhile
        # would make it one too many (made and destroyed for nothing)
        n = len(self._ready)
        if n < LOW:
            return not (self._returned and self.reuse)  # that one is checked first
        return n < self._target and (self._out == 0 or not self.reuse)

    def _fill(self) -> None:
        while True:
            with self._lock:
                while not self._stopped and (self._launching > 0 or not (self._returned or self._want_new())):
                    self._cond.wait()
                if self._stopped:
                    return
                back = self._returned.popleft() if self._returned else None
            if back is not None:
                stats = self._stats.get(back)  # none: not one of ours, not checked
                idle = stats is not None and _core.netns_idle(stats)  # three preads and a flush (see above)
                with self._lock:
                    if idle and len(self._ready) < KEEP:
                        self._ready.append(back)
                        back = None
                if back is not None:
                    self._close(back)  # the kernel destroys it
                continue
            fd, stats = _core.make_checked_netns()  # the GIL is released during the call
            with self._lock:
                if fd < 0:
                    self._stopped = True  # no permission here: launches make their own
                    self._thread = None
                    return
                self._stats[fd] = stats
                self._ready.append(fd)

    def _after_fork(self) -> None:
        # The refill thread does not exist in a forked child; start afresh.
        # The namespaces out (in the parent's sandboxes) keep their sockstat
        # files: a child that reaps such a sandbox closes them with it.
        self._lock = threading.RLock()  # entered as `with self._lock` (see interrupts.py)
        self._cond = threading.Condition(self._lock)
        self._thread = None
        self._launching = 0
        self._out = 0
        for fd in [*self._ready, *self._returned]:
            self._close(fd)
        self._ready.clear()
        self._returned.clear()


pool = NetnsPool()
os.register_at_fork(after_in_child=pool._after_fork)
_core.netns_sink = pool.give_back
