"""Cleanup that an interrupt must not cut short.

Python raises KeyboardInterrupt (or whatever a caller's own handler raises
for SIGTERM or SIGHUP) in the main thread between any two bytecodes, also
inside an `except` clause that is undoing a half-made sandbox: a second
Ctrl-C during the wait for a killed init left it a zombie, its id lease and
cgroups held by nothing.  `deferred()` holds those signals back for the
length of a cleanup and delivers them once it is done, to the handler the
caller had (its default too: SIGINT's KeyboardInterrupt, or a SIGTERM that
ends the process).

Locks: `with cond:` enters a threading.Condition through Python code (its
__enter__), and an interrupt raised as the acquire in it returned left the
lock held for good: the reaper's thread then waited for ever, and every
closed sandbox stayed a zombie.  The pools and threads of the SDK enter the
C lock itself (`with self._lock`, the lock of their Condition), which
nothing can cut between the acquire and the block.

Holds nest only as `with` blocks do: never around an `await`, where the
holds of two tasks would interleave and restore each other's handlers out
of order (one of them then stayed installed, swallowing every SIGINT).

Only for cleanup paths: a hold costs ~15 us (two sigactions per signal),
too much for a start or close that is 2 ms in all.  Those order their own
steps so that an interrupt between two of them leaves nothing unheld
(sandbox/_core.py's launch, SandboxBase.close)."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None

# SIGINT first: its hold is in place before anything else can be raised here
HELD = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield  # Python runs signal handlers in the main thread only: nothing comes here
        return
    got: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        if signum not in got:
            got.append(signum)

    saved: list[tuple[int, Handler]] = []
    try:
        for sig in HELD:
            if signal.getsignal(sig) is not None:  # (None: a handler set from C, left alone)
                # one call: a signal that came before it is held, not raised
                saved.append((sig, signal.signal(sig, hold)))
        yield
    finally:
        for num, h in saved:
            signal.signal(num, h)
        for n in got:
            signal.raise_signal(n)  # now, to the caller's handler
