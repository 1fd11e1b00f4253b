"""cgroup v1: one hierarchy per controller (this machine's layout).

A group is one directory per hierarchy: memory, pids and cpuacct always
(limits and accounting), cpu for a sandbox's group and for an exec with a
CPU quota of its own (an exec under its sandbox's quota joins the sandbox's
cpu group: one mkdir and rmdir less), cpuset only when a limit needs it.
Directories nest under this process's own cgroup in each hierarchy; the
caller is never moved.

An exec enters by writing "0" to `tasks` from its own, single thread:
that path takes no global lock (a write of a pid to cgroup.procs does, and
after idleness waits ~10 ms for an RCU grace period: measured here)."""

from __future__ import annotations

import errno
import os

from .. import fsbatch
from ..errors import HostError
from ..limits import UNLIMITED, Limits
from . import _fs
from .group import Group, Usage

ALWAYS = ("memory", "pids", "cpuacct")
CPU_PERIOD = 100_000  # us


def mounts() -> dict[str, str]:
    """controller -> where its v1 hierarchy is mounted (its root)."""
    found: dict[str, str] = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fstype, _, opts = right.split()[:3]
            if fstype != "cgroup":
                continue
            fields = left.split()
            root, point = fields[3], fields[4]
            if root != "/":
                continue  # a bind of a sub-tree: not a place to start from
            for opt in opts.split(","):
                if opt in ("memory", "pids", "cpu", "cpuacct", "cpuset"):
                    found.setdefault(opt, point)
    return found


class V1Root:
    """Where this process's groups go: its own cgroup in each hierarchy."""

    version = 1

    def __init__(self, points: dict[str, str]) -> None:
        self.base = {c: os.path.join(p, _fs.own_path(c).lstrip("/")).rstrip("/") for c, p in points.items()}

    def make(self, name: str, limits: Limits) -> V1Group:
        return V1Group(self.base, name, limits, self)


_memsw: list[bool] = []


def _has_memsw(memory_dir: str) -> bool:
    """Whether the kernel accounts swap (swapaccount): the same for every group."""
    if not _memsw:
        _memsw.append(os.path.exists(f"{memory_dir}/memory.memsw.limit_in_bytes"))
    return _memsw[0]


def _needed(limits: Limits, top: bool) -> list[str]:
    need = list(ALWAYS)
    if top:
        need.append("cpu")  # a sandbox's: so that cpus= needs no mkdir at its start
    if limits.cpuset is not None:
        need.append("cpuset")
    return need


def _quota(cpus: float) -> int:
    return max(1000, int(cpus * CPU_PERIOD))  # us per period (the kernel's default, 100 ms)


class V1Group(Group):
    version = 1

    def __init__(
        self, parents: dict[str, str], name: str, limits: Limits, root: V1Root, parent: V1Group | None = None
    ) -> None:
        super().__init__()
        self._root = root
        self._parents = parents
        self._parent = parent  # the sandbox's group, for an exec's
        self.name = name
        self.dirs: dict[str, str] = {}
        self._limited = False
        self._quota = 0  # the cfs quota written here (us), 0: none
        self._attach_dirs: list[str] = []  # the groups the attach fds enter
        try:
            self._ensure_needed(limits)
            if parent is not None:
                self._open_resettable(self._resettable())
            self.apply(limits)
        except BaseException:
            self.remove()
            raise

    def exists(self) -> bool:
        return bool(self.dirs)

    def _ensure(self, controller: str) -> str:
        d = self.dirs.get(controller)
        if d is not None:
            return d
        parent = self._parents.get(controller)
        if parent is None:
            raise HostError(
                f"the {controller} cgroup controller is not mounted: a limit needs it "
                f"(mount a cgroup v1 hierarchy with {controller}, or drop that limit)"
            )
        d = os.path.join(parent, self.name)
        os.mkdir(d)
        self.dirs[controller] = d
        self._drop_attach()  # opened ahead of time without this hierarchy
        if controller == "cpuset":
            # a v1 cpuset takes no task before it has CPUs and memory nodes
            for f in ("cpuset.cpus", "cpuset.mems"):
                _fs.write(f"{d}/{f}", _fs.read(f"{parent}/{f}").strip() or "0")
        return d

    def _ensure_needed(self, limits: Limits) -> None:
        want = [
            c
            for c in _needed(limits, self._parent is None)
            # a host without the cpu controller needs no cpus=
            if (c in self._parents or c != "cpu") and c not in self.dirs
        ]
        plain = [c for c in want if c != "cpuset" and c in self._parents]
        if plain:
            # one C call for the directories (sandbox/fsbatch.py); the rest as _ensure
            paths = [os.path.join(self._parents[c], self.name) for c in plain]
            err = None
            for c, d, r in zip(plain, paths, fsbatch.mkdir_many(paths), strict=True):
                if r == 0:
                    self.dirs[c] = d
                elif err is None:
                    err = fsbatch.error(r, d)
            self._drop_attach()  # opened ahead of time without these hierarchies
            if err is not None:
                raise err
        for c in want:
            self._ensure(c)

    def _cpu_group(self) -> str | None:
        """The cpu group an exec of this group enters: its own with a quota,
        else its sandbox's with one; None: no quota, nothing to enter."""
        if self._quota:
            return self.dirs["cpu"]
        p = self._parent
        return p.dirs.get("cpu") if p is not None and p._quota else None

    def _apply(self, limits: Limits) -> None:
        self._ensure_needed(limits)
        if limits.memory is not None:
            m = self.dirs["memory"]
            mem = int(limits.memory)
            swap = mem if limits.memory_swap is None else int(limits.memory_swap)
            if _has_memsw(m):
                # memsw may never be below the memory limit: on a group that had
                # limits, raise it first (a fresh group's is unlimited)
                if self._limited:
                    self._w(f"{m}/memory.memsw.limit_in_bytes", "-1")
                self._w(f"{m}/memory.limit_in_bytes", str(mem))
                self._w(f"{m}/memory.memsw.limit_in_bytes", "-1" if swap == UNLIMITED else str(swap))
            else:
                self._w(f"{m}/memory.limit_in_bytes", str(mem))
            self._limited = True
        if limits.pids is not None:
            self._w(f"{self.dirs['pids']}/pids.max", str(limits.pids))
        if limits.cpus is not None:
            # an exec's own quota: one that is its sandbox's never gets here (Group._own)
            quota = _quota(limits.cpus)
            self._w(f"{self._ensure('cpu')}/cpu.cfs_quota_us", str(quota))
            self._quota = quota
        if self._attach is not None and self._attach_dirs != self._targets():
            self._drop_attach()  # opened ahead of time for other groups
        if limits.cpuset is not None:
            self._w(f"{self.dirs['cpuset']}/cpuset.cpus", limits.cpuset)

    def _for_child(self, limits: Limits) -> None:
        if limits.cpuset is not None:
            self._ensure("cpuset")  # a child's hierarchy must have the parent in it

    def _new_child(self, name: str, limits: Limits) -> V1Group:
        return V1Group(self.dirs, name, limits, self._root, parent=self)

    def prepare_start(self, sandbox: bool = False) -> None:
        m, p, c = (self._dir(k) for k in ("memory", "pids", "cpu"))
        self.prepare(
            [
                f"{m}/memory.limit_in_bytes",
                f"{m}/memory.memsw.limit_in_bytes",
                f"{p}/pids.max",
                f"{c}/cpu.cfs_quota_us",
            ],
            self._usage_files(),
            sandbox,
        )

    def _usage_files(self) -> list[str]:
        """What usage() reads, in its order."""
        a, m, p = self._dir("cpuacct"), self._dir("memory"), self._dir("pids")
        return [
            f"{a}/cpuacct.usage",
            f"{a}/cpuacct.usage_user",
            f"{a}/cpuacct.usage_sys",
            f"{m}/memory.max_usage_in_bytes",
            f"{m}/memory.oom_control",
            f"{p}/pids.events",
            f"{p}/pids.peak",
            f"{m}/memory.usage_in_bytes",
        ]

    def _resettable(self) -> list[str]:
        # cpuacct.usage takes "0" for all its counts (usage_user and _sys too);
        # memory.max_usage_in_bytes takes "0" for "the usage now"
        return [f"{self._dir('cpuacct')}/cpuacct.usage", f"{self._dir('memory')}/memory.max_usage_in_bytes"]

    def _reset_counts(self) -> bool:
        return self._reset(self._resettable(), b"0")

    def _targets(self) -> list[str]:
        """The groups an exec of this group enters, one per hierarchy: its
        own, or its sandbox's where only the sandbox has a limit there (a
        CPU quota, a cpuset).  Only hierarchies that count or limit
        something: each join is a css_set migration in the exec's start
        (cpu without a quota limits nothing, cpuacct counts the CPU time)."""
        dirs = [d for c, d in self.dirs.items() if c != "cpu"]
        cpu = self._cpu_group()
        if cpu:
            dirs.append(cpu)
        p = self._parent
        if p is not None and "cpuset" not in self.dirs and "cpuset" in p.dirs:
            dirs.append(p.dirs["cpuset"])
        return dirs

    def _open_attach(self) -> list[int]:
        dirs = self._targets()
        self._attach_dirs = dirs
        fds = fsbatch.open_many([f"{d}/tasks" for d in dirs], os.O_WRONLY)
        bad = next((fd for fd in fds if fd < 0), None)
        if bad is not None:
            fsbatch.close_many([fd for fd in fds if fd >= 0])
            raise fsbatch.error(bad, "a cgroup's tasks file")
        return fds

    def _dir(self, controller: str) -> str:
        # a removed group (its sandbox closed meanwhile) reads as empty
        return self.dirs.get(controller, "/nonexistent")

    def cpu_seconds(self) -> float:
        return self._ri(f"{self._dir('cpuacct')}/cpuacct.usage") / 1e9

    def pids_refused(self) -> int:
        return self._keyed(f"{self._dir('pids')}/pids.events").get("max", 0)

    def usage(self) -> Usage:
        # cpuacct.usage is exact (the tasks' own CPU clocks); usage_user and
        # usage_sys split it by where ticks fell, and can add up to 10-20 %
        # more: keep the exact total, in their proportion
        texts = self._read_many(self._usage_files())
        total, user, sys_, peak = (_fs.to_int(t) for t in texts[:4])
        share = user / (user + sys_) if user + sys_ else 1.0
        return Usage(
            cpu_user=total / 1e9 * share,
            cpu_sys=total / 1e9 * (1.0 - share),
            max_memory=peak,
            oom_kills=_fs.parse_keyed(texts[4]).get("oom_kill", 0),
            pids_refused=_fs.parse_keyed(texts[5]).get("max", 0),
            pids_peak=_fs.to_int(texts[6], -1),
            memory_now=_fs.to_int(texts[7], -1),
        )

    def kill(self) -> None:
        _fs.kill_listed(f"{self._dir('pids')}/cgroup.procs")

    def has_processes(self) -> bool:
        return bool(_fs.pids(f"{self._dir('pids')}/cgroup.procs"))

    def shmem(self) -> int:
        return self._keyed(f"{self._dir('memory')}/memory.stat").get("total_shmem", -1)  # hierarchical

    def _rmdirs(self, tries: int) -> bool:
        ok, err = True, None
        items = list(self.dirs.items())
        # the first try of all of them in one C call; a busy one is tried again as before
        for (c, d), r in zip(items, fsbatch.rmdir_many([d for _, d in items]), strict=True):
            if r in (0, -errno.ENOENT) or (r == -errno.EBUSY and _fs.rmdir(d, tries)):
                del self.dirs[c]
            elif r == -errno.EBUSY:
                ok = False
            elif err is None:
                err = fsbatch.error(r, d)  # after the others: dirs stays exact
        if err is not None:
            raise err
        return ok
