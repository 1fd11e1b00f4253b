"""Closed sandboxes are killed at once and waited for in the background.

A sandbox's init takes its whole sandbox with it when it dies: the kernel
kills every process of its pid namespace and unmounts its mount namespace
(the overlay, every tmpfs) inside the init's own exit.  Waiting for that
took ~0.35 ms of a ~2.5 ms cycle here (perf: cleanup_mnt, ovl_free_fs and
an expedited RCU grace period in do_exit), so close() sends the SIGKILL and
one thread does the wait, then what must come after it: the cgroup goes
(rmdir needs it empty), the network namespace goes back to its pool (only
once nothing of the sandbox is left in it), the image may be removed again.

After close() the sandbox's processes are dying: none runs on (SIGKILL is
not blockable) and none can be signalled into doing more.
`sandbox.wait_closed()` waits until every closed sandbox is gone (also done
at exit, and by `images.remove`/`prune`, which may then take the layers).
A sandbox on a network is waited for in close() itself: its address must
not go to another sandbox while its interface still exists."""

from __future__ import annotations

import atexit
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable

from . import _core

After = Callable[[], None]
IDLE_LOOK = 1.0  # seconds between looks at the queue while nothing came


class Reaper:
    def __init__(self) -> None:
        self._queue: deque[tuple[_core.Launched, list[After]]] = deque()
        self._lock = threading.RLock()  # entered as `with self._lock` (see interrupts.py)
        self._cond = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._busy = 0

    def reap(self, launched: _core.Launched, after: list[After]) -> bool:
        """Kill the init now; wait for it and run `after` in the thread.
        False if it was handed over already (two threads closing one
        sandbox, or a close interrupted and done again), or is another
        process's (inherited over a fork): then only its fds are closed
        here, and nothing is killed or given back.

        Killed and queued under the lock, and marked queued only once it is
        killed: interrupted in between, a second call kills it again (a
        dead init's pidfd stays valid until the thread reaps it)."""
        if not launched.mine:
            _core.forget(launched)
            return False
        inline = False
        with self._lock:
            if launched.queued:
                return False
            _core.kill(launched)
            launched.queued = True
            if sys.is_finalizing():
                # at exit, after atexit: a new thread would never start (its
                # start blocks for ever), and nothing would wait for it
                inline = True
            else:
                self._queue.append((launched, after))
                self._busy += 1
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="sandbox-reaper", daemon=True)
                    self._thread.start()
                self._cond.notify()
        if inline:
            self._finish(launched, after)
        return True

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._queue:
                    # (not for ever: a notify an interrupt cut short in reap()
                    # would leave a queued sandbox unreaped)
                    self._cond.wait(IDLE_LOOK)
                launched, after = self._queue.popleft()
            try:
                self._finish(launched, after)
            finally:
                with self._lock:
                    launched.done = True
                    self._busy -= 1
                    self._cond.notify_all()

    @staticmethod
    def _finish(launched: _core.Launched, after: list[After]) -> None:
        _core.collect(launched)  # killed in reap(): wait, then close its fds
        for fn in after:
            try:
                fn()
            except Exception as e:  # pragma: no cover - a bug, said where it happened
                print(f"sandbox: after closing a sandbox: {e!r}", file=sys.stderr)
        launched.done = True

    def wait(self, launched: _core.Launched) -> None:
        """Until `launched`, handed over, is gone and its `after` done."""
        with self._lock:
            while not launched.done:
                self._cond.wait(IDLE_LOOK)

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until every sandbox handed over is gone; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def _after_fork(self) -> None:
        # The thread does not exist in a forked child; the inits are the parent's.
        self._lock = threading.RLock()  # entered as `with self._lock` (see interrupts.py)
        self._cond = threading.Condition(self._lock)
        self._queue.clear()
        self._thread = None
        self._busy = 0


reaper = Reaper()
os.register_at_fork(after_in_child=reaper._after_fork)
atexit.register(reaper.drain)
drain = reaper.drain


def wait_closed(timeout: float = 10.0) -> bool:
    """Wait until every sandbox this process closed is gone (its processes
    reaped, its mounts and cgroups removed, its image released); False if
    that took longer than `timeout` seconds."""
    return reaper.drain(timeout)
