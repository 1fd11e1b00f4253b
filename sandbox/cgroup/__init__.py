"""Cgroups for sandboxes and their execs, on v1 or v2, chosen by probing
the host: v1 where the memory controller is on a v1 hierarchy (hybrid
hosts such as this one), v2 where the unified hierarchy offers it.

`root()` is the place this process's groups go (None, with `why()`, when
the host has no usable cgroups: sandboxes then run without cgroup limits or
accounting, and asking for a limit that needs them raises HostError)."""

from __future__ import annotations

import itertools
import os
import sys
import threading

from ..errors import HostError
from ..limits import Limits
from . import gc, pool, v1, v2
from .group import Group, Usage, sandbox_name

__all__ = ["Group", "Root", "Usage", "dispose", "make_sandbox_group", "root", "shutdown", "why"]

Root = v1.V1Root | v2.V2Root

_lock = threading.Lock()
_state: dict[int, tuple[Root | None, str]] = {}  # by pid: a forked child probes again
_seq = itertools.count(1)
_pools: dict[int, pool.Pool] = {}


def _probe() -> tuple[Root | None, str]:
    if os.geteuid() != 0:
        return None, "cgroups need root here (no delegated cgroup is used)"
    try:
        points = v1.mounts()
        if "memory" in points:
            return v1.V1Root(points), ""
        point = v2.mount_point()
        if point is not None:
            return v2.V2Root(point), ""
        return None, "no cgroup hierarchy with the memory controller is mounted"
    except HostError as e:
        return None, str(e)
    except (OSError, LookupError, ValueError) as e:
        return None, f"cgroups cannot be used: {e}"


def _get() -> tuple[Root | None, str]:
    pid = os.getpid()
    with _lock:
        st = _state.get(pid)
        if st is None:
            st = _state[pid] = _probe()
            if st[0] is not None:
                gc.start_background(st[0])
        return st


def root() -> Root | None:
    return _get()[0]


def why() -> str:
    return _get()[1]


def _pool() -> pool.Pool | None:
    r = root()
    if r is None:
        return None
    with _lock:
        p = _pools.get(os.getpid())
        if p is None:
            p = _pools[os.getpid()] = pool.new(lambda: r.make(sandbox_name(next(_seq)), Limits()))
        return p


def make_sandbox_group(limits: Limits, always: bool = False) -> Group | None:
    """The group of one sandbox (from the pool), with these limits.  None
    when no limit needs one (unless `always`: an exec's limits need one), or
    where cgroups are not usable and nothing needs them."""
    need = always or limits.needs_cgroup
    p = _pool()
    if p is None:
        if need or os.environ.get("SANDBOX_MUST_WORK") == "1":
            raise HostError(f"limits need cgroups: {why()}")
        return None
    if not need:
        return None  # made by the first exec that needs one (SandboxBase._exec_group)
    return p.take(limits)


def dispose(g: Group) -> None:
    """A group no process of which will run again: removed in the background."""
    p = _pool()
    if p is not None:
        p.dispose(g)
    else:  # pragma: no cover - a group without a pool cannot exist
        g.remove()


def shutdown() -> None:
    """Remove every cgroup this process keeps ahead of time or still has to
    remove (done at exit too).  The pool starts again on the next sandbox."""
    reaper = sys.modules.get("sandbox.reaper")
    if reaper is not None:
        reaper.drain()  # sandboxes closed a moment ago hand their groups back first
    p = _pools.get(os.getpid())
    if p is not None:
        p.shutdown()
        p.restart()
