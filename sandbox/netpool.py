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
queue (`_core.netns_idle`).  Nothing else in it can have changed: the
namespace belongs to the host's user namespace, where the sandbox's root has
no capability, so its addresses, routes, sysctls and firewall are ours.
What does carry over are its counters (`/proc/net/snmp`, `lo`'s packet
counts): the next sandbox can see how much the last one sent over its
loopback.  SANDBOX_NETNS_REUSE=0 gives every sandbox a new namespace."""

from __future__ import annotations

import os
import threading
from collections import deque

from . import _core

TARGET = 4
LOW = 2  # made anyway below this many


class NetnsPool:
    def __init__(self, target: int = TARGET) -> None:
        self._target = target
        self._ready: deque[int] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._broken = False
        self._launching = 0
        self._returned: deque[int] = deque()  # handed back, not yet checked
        self._out = 0  # taken, to be given back
        self.reuse = os.environ.get("SANDBOX_NETNS_REUSE", "1") != "0"

    def take(self, returned: bool = True) -> int | None:
        """A namespace fd (the caller closes it, or gives it back if `returned`);
        None where this host does not let us make one (the launcher then asks
        clone for a new one)."""
        with self._cond:
            self._launching += 1  # until launched(): no refill meanwhile
            if returned:
                self._out += 1
            fd = self._ready.popleft() if self._ready else None
            if self._broken:
                return None
            if self._thread is None:
                self._thread = threading.Thread(target=self._fill, name="sandbox-netns", daemon=True)
                self._thread.start()
        if fd is None:
            # Empty (a burst of starts): make this one now, so that every
            # sandbox gets the same kind of namespace.
            fd = _core.make_netns()
            if fd < 0:
                return None
        return fd

    def launched(self) -> None:
        """The caller's launch is over (its init runs, or it failed): the
        refill may go on.  Making a namespace while a clone and exec run
        slowed that exec from 65 us to 390 us here, so refills wait."""
        with self._cond:
            self._launching -= 1
            self._cond.notify()

    def give_back(self, fd: int) -> None:
        """A reaped sandbox's namespace (ours now): checked, then used again
        or closed, by the thread."""
        with self._cond:
            self._out = max(0, self._out - 1)
            if self.reuse and self._thread is not None and len(self._returned) < self._target:
                self._returned.append(fd)
                self._cond.notify()
                return
        os.close(fd)

    def _want_new(self) -> bool:
        # with self._cond held.  Below LOW always; up to the target only while
        # no namespace is out: one that is comes back, and one made meanwhile
        # would make it one too many (made and destroyed for nothing)
        n = len(self._ready)
        return n < LOW or (n < self._target and (self._out == 0 or not self.reuse))

    def _fill(self) -> None:
        while True:
            with self._cond:
                while self._launching > 0 or not (self._returned or self._want_new()):
                    self._cond.wait()
                back = self._returned.popleft() if self._returned else None
            if back is not None:
                idle = _core.netns_idle(back)  # ~30 us: two setns and two reads
                with self._cond:
                    if idle and len(self._ready) < self._target:
                        self._ready.append(back)
                        back = None
                if back is not None:
                    os.close(back)  # the kernel destroys it
                continue
            fd = _core.make_netns()  # the GIL is released during the call
            with self._cond:
                if fd < 0:
                    self._broken = True  # no permission here: launches make their own
                    self._thread = None
                    return
                self._ready.append(fd)

    def _after_fork(self) -> None:
        # The refill thread does not exist in a forked child; start afresh.
        self._cond = threading.Condition()
        self._thread = None
        self._launching = 0
        self._out = 0
        for fd in [*self._ready, *self._returned]:
            os.close(fd)
        self._ready.clear()
        self._returned.clear()


pool = NetnsPool()
os.register_at_fork(after_in_child=pool._after_fork)
_core.netns_sink = pool.give_back
