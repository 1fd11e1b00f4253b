"""Warm sandboxes: for options used again and again (a judge, a test suite,
a benchmark), the next sandbox is set up ahead of time by a background
thread, so that a start only takes it.

What is kept is exactly what a start would make, and nothing has ever run
in it: an init that runs its plan (mounts, pivot_root, hostname, the filter)
and says READY, then waits for its first request.  The thread only
launches (the next may be launched while the last sets up); the start that
takes one reads its READY, and a failed setup makes that start launch its
own.  A sandbox with secrets or a bridge network is never prepared ahead (secrets are per launch, leases
per sandbox); neither are options seen only once: a spec is warmed from
its second sandbox on, up to PER_SPEC ahead, a few specs at most
(MAX_SPECS), and an unused warm sandbox is stopped after TTL seconds.  The
next one is asked for when a sandbox closes, and made once the caller's
next exec is under way (or KICK_WAIT later): the caller's constructor,
start and close are Python work, and this thread's would contend with them
for the interpreter lock; while an exec runs the caller only waits.

`Sandbox(warm=False)`, or SANDBOX_WARM=0, starts cold.  Warm sandboxes
were launched from this thread, not the caller's: they have no
parent-death signal, and die with their owner through the control
socket's EOF, as any sandbox does.  `shutdown()` stops them (at exit too;
the leak check calls it)."""

from __future__ import annotations

import atexit
import os
import select
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from . import _core, idranges, interrupts, layout, netpool
from .spec import Spec

TTL = 10.0
# Ahead per spec.  Back-to-back on 2 CPUs, a launch's setup competes with
# the caller's cycles and took more than two of them (~3.6 ms) in 35-45% of
# starts, which then waited ~0.5 ms for READY; three ahead: 9-17% (measured,
# /work/notes/s5-depth.py).  Each waiting one is an idle init and its mounts.
PER_SPEC = 3
MAX_SPECS = 4
SEEN_MAX = 64
READY_TIMEOUT = 30.0
KICK_WAIT = 0.002  # seconds the thread waits for an exec to be under way
INFLIGHT_WAIT = 0.02  # seconds a start waits for a warm sandbox on its way

Releaser = Callable[[], None]


@dataclass
class _Entry:
    launched: _core.Launched
    sources: tuple[tuple[int, int], ...]  # what its layers and mount sources were (sources_of)
    made: float = field(default_factory=time.monotonic)
    release: Releaser | None = None  # e.g. the image's hold, for as long as it waits


def sources_of(spec: Spec) -> tuple[tuple[int, int], ...]:
    """(st_dev, st_ino) of each layer and mount source, as the launcher's
    open_tree finds them now ((-1, -1): missing).  A warm sandbox holds the
    trees it bound when it was launched: a caller that makes the same path
    anew for each sandbox (rename or remove, then mkdir: a judge's next
    submission) would else get one showing the directory it had replaced."""
    out = []
    for path in (*spec.layers, *(os.fspath(m.src) for m in spec.mounts)):
        try:
            st = os.stat(path)
            out.append((st.st_dev, st.st_ino))
        except OSError:
            out.append((-1, -1))
    return tuple(out)


def start_ahead(spec: Spec) -> _core.Launched | None:
    """Launch a sandbox for `spec`, without waiting for its setup: the start
    that takes it reads its READY (or why it failed).  None if the launch
    failed (the caller's own start will then report why).

    Not waiting here lets this thread launch the next one while the last
    still sets up: back-to-back, a launch takes longer until READY (~1.8 ms
    here, beside the caller's exec) than a whole cycle, and with one launch
    at a time the pool never got ahead."""
    plan, trees = layout.build(spec)
    try:
        umap, ids = idranges.for_launch(spec.idmap)
    except Exception:
        return None
    try:
        netns = netpool.pool.take()
    except BaseException:
        if ids is not None:
            ids.release()
        raise
    try:
        launched = _core.launch(plan, trees, umap, umap, netns_fd=-1 if netns is None else netns, spin=False)
        launched.netns, netns = netns, None  # back to the pool when it is reaped
        if ids is not None:
            launched.release, ids = ids.release, None  # held until it is reaped
        return launched
    except Exception:
        return None
    finally:
        if ids is not None:
            ids.release()  # the launch failed
        netpool.pool.launched()
        if netns is not None:
            netpool.pool.give_back(netns)  # the launch failed: unused


class WarmPool:
    def __init__(self) -> None:
        self._ready: OrderedDict[Spec, list[_Entry]] = OrderedDict()
        self._wanted: OrderedDict[Spec, Releaser | None] = OrderedDict()
        self._seen: OrderedDict[Spec, int] = OrderedDict()
        self._holds: dict[Spec, Callable[[], Releaser] | None] = {}
        self._making = 0
        self._in_flight: Spec | None = None  # the spec whose sandbox the thread makes now
        self._kicked = False
        self._catch_up: set[Spec] = set()  # wanted again at once, without a kick
        self._lock = threading.RLock()  # entered as `with self._lock` (see interrupts.py)
        self._cond = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._stopped = False

    def take(self, spec: Spec) -> _core.Launched | None:
        """A ready sandbox for `spec`, if one waits (and its init still lives),
        or is on its way: one being made is waited for (up to INFLIGHT_WAIT),
        its launch is further along than a new one, which would also compete
        with it for the CPUs (measured: back-to-back starts that did not wait
        took ~4 ms, against ~2 ms for a warm one, on 2 CPUs)."""
        deadline = time.monotonic() + INFLIGHT_WAIT
        stale: list[_Entry] = []
        with self._lock:
            while not self._ready.get(spec) and self._in_flight == spec and not self._stopped:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            entries = self._ready.get(spec)
            if entries:
                # those that bound what the paths no longer are: all go (the
                # stats only where one waits: a cold start pays nothing)
                now = sources_of(spec)
                stale = [x for x in entries if x.sources != now]
                entries[:] = [x for x in entries if x.sources == now]
            e = None
            if entries:
                # not pop(): an interrupt raised as that call returns lost the entry
                e = entries[0]
                del entries[0]
        try:
            for x in stale:
                self._drop(x)
            if e is None:
                return None
            if e.release is not None:
                e.release()  # the new Sandbox holds its image itself
            if _alive(e.launched):
                return e.launched
        except BaseException:
            if e is not None:
                with interrupts.deferred():
                    _core.reap(e.launched)  # interrupted: ours, and held by nothing else
            raise
        _core.reap(e.launched)
        return None

    def started(self, spec: Spec, hold: Callable[[], Releaser] | None = None) -> None:
        """A sandbox with `spec` starts: from its second time, have the next
        one made ahead.  `hold`: what keeps its image while it waits."""
        with self._lock:
            if self._stopped:
                return
            n = self._seen.pop(spec, 0) + 1
            self._seen[spec] = n
            while len(self._seen) > SEEN_MAX:
                self._seen.popitem(last=False)
            if n < 2 or spec in self._wanted:
                return
            have = len(self._ready.get(spec, ()))
            if have >= PER_SPEC:
                self._ready.move_to_end(spec)
                return
            self._wanted[spec] = None
            self._holds[spec] = hold
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="sandbox-warm", daemon=True)
                self._thread.start()
            self._cond.notify()

    def kick(self) -> None:
        """An exec request went out: its caller now waits, the thread may work."""
        if self._wanted and not self._kicked:
            with self._lock:
                self._kicked = True
                self._cond.notify_all()

    def _run(self) -> None:
        _core.own_fs()  # its launches skip the helper (else they take it)
        while True:
            with self._lock:
                while not self._stopped and not self._wanted:
                    self._cond.wait(self._next_expiry())
                    self._expire()
                if self._stopped:
                    return
                # Until the caller's next exec is under way (kick), or KICK_WAIT:
                # its start, exec request and close are Python work, with
                # which this thread's would contend for the interpreter lock
                # (measured: a 40 us constructor took 230 us back-to-back)
                end = time.monotonic() + KICK_WAIT
                while (
                    not self._kicked
                    and not self._stopped
                    and time.monotonic() < end
                    and next(iter(self._wanted), None) not in self._catch_up
                ):
                    self._cond.wait(end - time.monotonic())
                self._kicked = False
                if self._stopped or not self._wanted:
                    continue
                spec, _ = self._wanted.popitem(last=False)
                self._catch_up.discard(spec)
                hold = self._holds.pop(spec, None)
                self._making += 1
                self._in_flight = spec
            release = None
            try:
                release = hold() if hold is not None else None
                sources = sources_of(spec)  # before the launch: a change meanwhile shows at take()
                launched = start_ahead(spec)
            except Exception:
                launched = None
            evicted: list[_Entry] = []
            with self._lock:
                self._making -= 1
                self._in_flight = None
                if launched is not None and not self._stopped:
                    entries = self._ready.setdefault(spec, [])
                    entries.append(_Entry(launched, sources, release=release))
                    self._ready.move_to_end(spec)
                    launched, release = None, None  # the pool has them now
                    evicted = self._evict()
                    if len(entries) < PER_SPEC and spec not in self._wanted and spec in self._ready:
                        # up to PER_SPEC ahead, this one at once: back-to-back,
                        # a sandbox's setup takes longer than a cycle, so that
                        # the one taken should have been launched PER_SPEC
                        # cycles before (each exec's kick then launches one,
                        # as one is taken)
                        self._wanted[spec] = None
                        self._holds[spec] = hold
                        self._catch_up.add(spec)
                self._cond.notify_all()
            if launched is not None:
                _core.reap(launched)
            if release is not None:
                release()
            for e in evicted:
                self._drop(e)

    def _evict(self) -> list[_Entry]:
        out: list[_Entry] = []
        while len(self._ready) > MAX_SPECS:
            _, entries = self._ready.popitem(last=False)
            out += entries
        return out

    def _next_expiry(self) -> float | None:
        times = [e.made + TTL for es in self._ready.values() for e in es]
        return max(0.0, min(times) - time.monotonic()) if times else None

    def _expire(self) -> None:
        now = time.monotonic()
        old: list[_Entry] = []
        for spec in list(self._ready):
            keep = [e for e in self._ready[spec] if e.made + TTL > now]
            old += [e for e in self._ready[spec] if e.made + TTL <= now]
            if keep:
                self._ready[spec] = keep
            else:
                del self._ready[spec]
        for e in old:
            self._drop(e)

    @staticmethod
    def _drop(e: _Entry) -> None:
        _core.reap(e.launched)
        if e.release is not None:
            e.release()

    def shutdown(self) -> None:
        """Stop every warm sandbox and the thread; usable again afterwards."""
        with self._lock:
            self._stopped = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(READY_TIMEOUT)
        with self._lock:
            entries = [e for es in self._ready.values() for e in es]
            self._ready.clear()
            self._wanted.clear()
            self._holds.clear()
            self._catch_up.clear()
            self._seen.clear()
            self._thread = None
            self._stopped = False
        for e in entries:
            self._drop(e)


def _alive(launched: _core.Launched) -> bool:
    """Whether its init is still there (one whose setup failed has exited).
    Its READY is left to the start that takes it."""
    p = select.poll()
    p.register(launched.pidfd, select.POLLIN)
    return not p.poll(0)


_pools: dict[int, WarmPool] = {}
_lock = threading.Lock()


_pid = os.getpid()  # kept by the fork hook: pool() is called per exec


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)


def pool() -> WarmPool:
    p = _pools.get(_pid)
    if p is None:
        with _lock:
            p = _pools.get(_pid)
            if p is None:
                p = _pools[_pid] = WarmPool()
    return p


def shutdown() -> None:
    p = _pools.get(os.getpid())
    if p is not None:
        p.shutdown()


def enabled(option: bool) -> bool:
    return option and os.environ.get("SANDBOX_WARM", "1") != "0"


atexit.register(shutdown)
