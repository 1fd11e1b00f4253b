"""cgroup v2 (unified): one directory per group.

Groups nest under this process's own cgroup, which must be able to have
children with controllers: the root cgroup, or a delegated cgroup with no
process of its own (the no-internal-processes rule: we never move the
caller, so a cgroup that holds it and is not the root cannot be used; the
error says how to run the caller in a delegated leaf instead).

The sandbox's group enables memory, pids and cpu (cpuset when asked) for
its children; the execs live in the children, the init stays where the
caller is.  An exec enters by writing "0" to its group's cgroup.procs
through an fd the host opened (the kernel checks the opener's credentials
and cgroup namespace)."""

from __future__ import annotations

import os

from ..errors import HostError
from ..limits import UNLIMITED, Limits
from . import _fs
from .group import Group, Usage

CPU_PERIOD = 100_000  # us
WANTED = ("memory", "pids", "cpu")


def mount_point() -> str | None:
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if right.split()[0] == "cgroup2" and left.split()[3] == "/":
                return left.split()[4]
    return None


def _controllers(d: str) -> set[str]:
    return set(_fs.read(f"{d}/cgroup.controllers").split())


def _enable(d: str, controllers: list[str]) -> None:
    have = set(_fs.read(f"{d}/cgroup.subtree_control").split())
    missing = [c for c in controllers if c not in have]
    if missing:
        _fs.write(f"{d}/cgroup.subtree_control", " ".join(f"+{c}" for c in missing))


class V2Root:
    version = 2

    def __init__(self, point: str) -> None:
        self.base = os.path.join(point, _fs.own_path("").lstrip("/")).rstrip("/")
        have = _controllers(self.base)
        lacking = [c for c in WANTED if c not in have]
        if lacking:
            raise HostError(
                f"cgroup v2 at {self.base} does not offer {', '.join(lacking)}: "
                "enable them in the parent's cgroup.subtree_control (systemd: Delegate=yes)"
            )
        self._enabled = False

    def make(self, name: str, limits: Limits) -> V2Group:
        if not self._enabled:
            try:
                _enable(self.base, [*WANTED, *(["cpuset"] if "cpuset" in _controllers(self.base) else [])])
            except OSError as e:
                raise HostError(
                    f"cannot enable controllers for children of {self.base} ({e.strerror}): on cgroup v2 "
                    "a cgroup that holds processes cannot have limited children, and the caller is never "
                    "moved; run it in a delegated leaf, e.g. systemd-run --scope -p Delegate=yes, "
                    "or from the root cgroup"
                ) from None
            self._enabled = True
        return V2Group(self.base, name, limits, top=True)


class V2Group(Group):
    version = 2

    def __init__(self, parent: str, name: str, limits: Limits, top: bool = False) -> None:
        super().__init__()
        self.dir = os.path.join(parent, name)
        # cpu.stat cannot be reset: its counts when the group was recycled
        # (usec: usage, user, system), taken off what it says later
        self._cpu_base = (0, 0, 0)
        self._cpu_last = (0, 0, 0)
        os.mkdir(self.dir)
        try:
            if top:
                _enable(self.dir, [*WANTED, *(["cpuset"] if "cpuset" in _controllers(self.dir) else [])])
            else:
                self._open_resettable([f"{self.dir}/memory.peak"])  # an exec's
            self.apply(limits)
        except BaseException:
            self.remove()
            raise

    def exists(self) -> bool:
        return bool(self.dir)

    def _apply(self, limits: Limits) -> None:
        d = self.dir
        if limits.memory is not None:
            mem = int(limits.memory)
            self._w(f"{d}/memory.max", str(mem))
            if os.path.exists(f"{d}/memory.swap.max"):
                swap = limits.memory_swap
                extra = "max" if swap == UNLIMITED else str(0 if swap is None else int(swap) - mem)
                self._w(f"{d}/memory.swap.max", extra)
        if limits.pids is not None:
            self._w(f"{d}/pids.max", str(limits.pids))
        if limits.cpus is not None:
            self._w(f"{d}/cpu.max", f"{max(1000, int(limits.cpus * CPU_PERIOD))} {CPU_PERIOD}")
        if limits.cpuset is not None:
            if not os.path.exists(f"{d}/cpuset.cpus"):
                raise HostError("limits.cpuset: the cpuset controller is not available in this cgroup")
            self._w(f"{d}/cpuset.cpus", limits.cpuset)

    def _new_child(self, name: str, limits: Limits) -> V2Group:
        return V2Group(self.dir, name, limits)

    def prepare_start(self, sandbox: bool = False) -> None:
        d = self.dir
        self.prepare(
            [f"{d}/memory.max", f"{d}/memory.swap.max", f"{d}/pids.max", f"{d}/cpu.max"],
            self._usage_files(),
            sandbox,
        )

    def _usage_files(self) -> list[str]:
        """What usage() reads, in its order."""
        names = ("cpu.stat", "memory.peak", "memory.events", "pids.events", "pids.peak", "memory.current")
        return [f"{self.dir}/{f}" for f in names]

    def _reset_counts(self) -> bool:
        # a write to memory.peak resets the peak that fd reads (kernel 6.12+)
        if not self._reset([f"{self.dir}/memory.peak"], b"reset"):
            return False
        self._cpu_base = self._cpu_last
        return True

    def _open_attach(self) -> list[int]:
        return [os.open(f"{self.dir}/cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)]

    def cpu_seconds(self) -> float:
        used = self._keyed(f"{self.dir}/cpu.stat").get("usage_usec")
        return 0.0 if used is None else (used - self._cpu_base[0]) / 1e6  # None: removed meanwhile

    def pids_refused(self) -> int:
        return self._keyed(f"{self.dir}/pids.events").get("max", 0)

    def usage(self) -> Usage:
        cpu, peak, events, pids, pids_peak, now = self._read_many(self._usage_files())
        st = _fs.parse_keyed(cpu)
        user = sys_ = 0
        if st:  # else removed meanwhile (its sandbox closed): nothing to take off
            self._cpu_last = (st.get("usage_usec", 0), st.get("user_usec", 0), st.get("system_usec", 0))
            user, sys_ = self._cpu_last[1] - self._cpu_base[1], self._cpu_last[2] - self._cpu_base[2]
        return Usage(
            cpu_user=user / 1e6,
            cpu_sys=sys_ / 1e6,
            max_memory=_fs.to_int(peak),
            oom_kills=_fs.parse_keyed(events).get("oom_kill", 0),
            pids_refused=_fs.parse_keyed(pids).get("max", 0),
            pids_peak=_fs.to_int(pids_peak, -1),
            memory_now=_fs.to_int(now, -1),
        )

    def kill(self) -> None:
        if os.path.exists(f"{self.dir}/cgroup.kill"):
            _fs.write(f"{self.dir}/cgroup.kill", "1")
        _fs.kill_listed(f"{self.dir}/cgroup.procs")  # waits until they are gone

    def has_processes(self) -> bool:
        return bool(_fs.pids(f"{self.dir}/cgroup.procs"))

    def shmem(self) -> int:
        return self._keyed(f"{self.dir}/memory.stat").get("shmem", -1)  # v2's counts are hierarchical

    def _rmdirs(self, tries: int) -> bool:
        if self.dir and _fs.rmdir(self.dir, tries):
            self.dir = ""
        return not self.dir
