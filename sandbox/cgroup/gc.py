"""Removal of sandbox cgroups whose owner died (a crash, a SIGKILL): the
next start does it in the background for the owner's own cgroup, and
`sandbox gc` for every hierarchy.  A group is stale when the pid and start
time in its name (group.sandbox_name) no longer match a live process; its
processes died with their sandbox's pid namespace, so only empty
directories remain, removed children first."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

from . import _fs
from .group import PREFIX, owner_alive

if TYPE_CHECKING:
    from . import Root

MAX_DEPTH = 8


def _stale(top: str, depth: int = 0) -> Iterator[str]:
    try:
        entries = list(os.scandir(top))
    except OSError:
        return
    for e in entries:
        if not e.is_dir(follow_symlinks=False):
            continue
        if e.name.startswith(PREFIX):
            if not owner_alive(e.name):
                yield e.path
        elif depth < MAX_DEPTH:
            yield from _stale(e.path, depth + 1)


def remove_tree(path: str) -> bool:
    ok = True
    try:
        subs = [e.path for e in os.scandir(path) if e.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return True
    for s in subs:
        ok = remove_tree(s) and ok
    _fs.kill_listed(os.path.join(path, "cgroup.procs"))
    return _fs.rmdir(path) and ok


def tops(r: Root | None = None, everywhere: bool = False) -> list[str]:
    """Where to look: this process's cgroups, or every hierarchy's root."""
    from . import v1, v2

    if everywhere:
        points = list(v1.mounts().values())
        p2 = v2.mount_point()
        return sorted(set(points + ([p2] if p2 else [])))
    if r is None:
        return []
    return list(r.base.values()) if isinstance(r.base, dict) else [r.base]


def collect(r: Root | None = None, everywhere: bool = False) -> list[str]:
    """Remove stale sandbox cgroups; the paths removed."""
    removed = []
    for top in tops(r, everywhere):
        for path in _stale(top):
            if remove_tree(path):
                removed.append(path)
    return removed


def start_background(r: Root) -> None:
    threading.Thread(target=collect, args=(r,), name="sandbox-cgroup-gc", daemon=True).start()
