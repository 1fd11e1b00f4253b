"""Limits: what a sandbox, or one exec, may use.

Values are checked when a Limits is made, so that a bad one fails at the
caller's line, naming the field: sizes take "256M"/"1G" or bytes, durations
float seconds.  A sandbox's limits are the defaults of its execs; an exec may
override any field (`Limits.merge`).

Where each one is enforced:
  memory, memory_swap, pids, cpus, cpuset   the exec's own cgroup (and the
                                            sandbox's cgroup, for the sum)
  cpu_time      the exec cgroup's CPU total, watched by the host while it
                waits for the command; RLIMIT_CPU a second above, as a backstop
  timeout       wall clock, by the host
  output        bytes kept per stream (DEFAULT_OUTPUT unless set, -1 for no
                cap); then the command is killed, or with
                output_action="close" its stream is closed (it gets EPIPE)
  disk          the size of the tmpfs under the writable layer and /tmp
  open_files, file_size, stack   RLIMIT_NOFILE, RLIMIT_FSIZE, RLIMIT_STACK
"""

from __future__ import annotations

import math
import os
import re
import resource
from dataclasses import dataclass, fields, replace
from functools import cached_property, lru_cache

from .errors import ConfigError
from .sizes import MAX_SIZE, parse_seconds, parse_size, shown

_CPUSET = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")
OUTPUT_ACTIONS = ("kill", "close")
UNLIMITED = -1  # memory_swap=-1: swap without a limit; output=-1: keep it all
# What exec() keeps of each stream when `output` is not set.  Kept output is
# host memory, and a command writes it at pipe speed (~0.5 GB/s here):
# without a cap, `cat /dev/zero` is the host's OOM killer.
DEFAULT_OUTPUT = 64 << 20
# The kernel refuses a pids.max above PID_MAX_LIMIT (EINVAL, at the start).
MAX_PIDS = 1 << 22
# A quota of more CPUs than any host has limits nothing; the kernel's own
# ceiling (2**44 us per 100 ms period) is far above this one.
MAX_CPUS = 1 << 20


@dataclass(frozen=True)
class Limits:
    memory: int | str | None = None
    """Memory of the exec's processes (RAM), e.g. "256M"."""
    memory_swap: int | str | None = None
    """Memory plus swap, as Docker's --memory-swap: by default equal to
    `memory` (no swap); -1 for unlimited swap."""
    cpus: float | None = None
    """CPU bandwidth, in CPUs (1.5 = one and a half)."""
    cpuset: str | None = None
    """CPUs the exec may run on, e.g. "0-1,3"."""
    pids: int | None = None
    """Processes and threads at once; a refused fork ends the exec (reason "pids")."""
    cpu_time: float | None = None
    """CPU seconds (user + system, all processes of the exec)."""
    timeout: float | None = None
    """Wall-clock seconds."""
    output: int | str | None = None
    """Bytes kept per stream (stdout, stderr) of exec(): DEFAULT_OUTPUT (64
    MiB) unless set, -1 for no cap.  Output a caller streams (spawn, the
    CLI) is capped only when set."""
    output_action: str | None = None
    """At the output cap: "kill" the command (the default), or "close" the stream."""
    disk: int | str | None = None
    """Size of the sandbox's writable tmpfs (sandbox level only)."""
    open_files: int | None = None
    file_size: int | str | None = None
    stack: int | str | None = None

    def __post_init__(self) -> None:
        def put(name: str, value: object) -> None:
            object.__setattr__(self, name, value)

        for name in ("memory", "output", "disk", "file_size", "stack"):
            v = getattr(self, name)
            if v is not None and not (name == "output" and v == UNLIMITED):
                put(name, parse_size(f"limits.{name}", v, minimum=4096 if name != "output" else 0))
        if self.memory_swap is not None and self.memory_swap != UNLIMITED:
            swap = parse_size("limits.memory_swap", self.memory_swap, minimum=4096)
            if self.memory is None:
                raise ConfigError("limits.memory_swap", "set memory too: memory_swap is memory plus swap")
            if swap < int(self.memory):
                raise ConfigError(
                    "limits.memory_swap",
                    f"{shown(self.memory_swap)} is below memory ({self.memory}): it counts memory plus swap",
                )
            put("memory_swap", swap)
        if self.cpus is not None:
            if isinstance(self.cpus, bool) or not isinstance(self.cpus, (int, float)):
                raise ConfigError(
                    "limits.cpus", f"expected a number of CPUs such as 1.5, got {shown(self.cpus)}"
                )
            # `not 0.01 <= x`: also NaN; an int past a float's range compares as it is
            if not 0.01 <= self.cpus <= MAX_CPUS:
                raise ConfigError(
                    "limits.cpus", f"must be from 0.01 to {MAX_CPUS} CPUs, got {shown(self.cpus)}"
                )
            put("cpus", float(self.cpus))
        if self.cpuset is not None:
            if not isinstance(self.cpuset, str) or not _CPUSET.match(self.cpuset):
                raise ConfigError(
                    "limits.cpuset", f'expected CPU numbers such as "0-1,3", got {shown(self.cpuset)}'
                )
            for part in self.cpuset.split(","):
                lo, _, hi = part.partition("-")
                if hi and int(hi) < int(lo):
                    raise ConfigError("limits.cpuset", f"{part!r} is a reversed range: write it low-high")
            top = max(int(x) for x in re.split(r"[,-]", self.cpuset))
            if top >= (os.cpu_count() or 1):
                raise ConfigError(
                    "limits.cpuset", f"CPU {top} does not exist here: this host has {os.cpu_count()} CPUs"
                )
        for name, top in (("pids", MAX_PIDS), ("open_files", MAX_SIZE)):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ConfigError(f"limits.{name}", f"expected a positive whole number, got {shown(v)}")
            if v is not None and v > top:
                raise ConfigError(f"limits.{name}", f"{shown(v)} is too large: the maximum is {top}")
        for name in ("cpu_time", "timeout"):
            v = getattr(self, name)
            if v is not None:
                put(name, parse_seconds(f"limits.{name}", v))
        if self.output_action is not None and self.output_action not in OUTPUT_ACTIONS:
            raise ConfigError(
                "limits.output_action",
                f"expected one of {', '.join(OUTPUT_ACTIONS)}, got {shown(self.output_action)}",
            )

    def merge(self, override: Limits | None) -> Limits:
        """These limits with every field that `override` sets replaced."""
        if override is None:
            return self
        return _merged(self, override)

    def _merge(self, override: Limits) -> Limits:
        changes = {
            f.name: getattr(override, f.name)
            for f in fields(override)
            if getattr(override, f.name) is not None
        }
        return replace(self, **changes)

    @property
    def kept_output(self) -> int | None:
        """The cap on each stream exec() keeps in memory (None: none)."""
        if self.output is None:
            return DEFAULT_OUTPUT
        return None if self.output == UNLIMITED else int(self.output)

    @property
    def passed_output(self) -> int | None:
        """The cap on output the caller streams on (None: none, the default)."""
        return None if self.output is None or self.output == UNLIMITED else int(self.output)

    @property
    def closes_output(self) -> bool:
        """At the output cap the stream is closed (not the command killed)."""
        return self.output_action == "close"

    @cached_property  # asked per exec; the fields are frozen
    def needs_cgroup(self) -> bool:
        """Whether a command under these limits runs in a cgroup of its own:
        for the cgroup limits, for the exact CPU count of cpu_time, and for a
        timeout, which must end every process of the command (also those
        that left its session).  Without any of them a command runs in no
        cgroup at all: a mkdir and rmdir per hierarchy and level cost more
        than the rest of a start (~2 ms of CPU per sandbox here)."""
        wanted = (self.memory, self.pids, self.cpus, self.cpuset, self.cpu_time, self.timeout)
        return any(v is not None for v in wanted)

    def rlimits(self) -> list[tuple[int, int, int]]:
        """(resource, soft, hard) for every limit that is an rlimit."""
        out = [(resource.RLIMIT_CORE, 0, 0)]  # never a core dump: it would land in the sandbox's disk
        if self.cpu_time is not None:
            # A backstop a second above the limit (SIGXCPU, then SIGKILL): the
            # host ends the command at the limit itself, from the cgroup's exact
            # count, where the rlimit counts ticks (10 % off under load here)
            # and each process apart.
            soft = math.ceil(self.cpu_time) + 1
            out.append((resource.RLIMIT_CPU, soft, soft + 1))
        if self.open_files is not None:
            out.append((resource.RLIMIT_NOFILE, self.open_files, self.open_files))
        if self.file_size is not None:
            out.append((resource.RLIMIT_FSIZE, int(self.file_size), int(self.file_size)))
        if self.stack is not None:
            out.append((resource.RLIMIT_STACK, int(self.stack), int(self.stack)))
        return out


@lru_cache(maxsize=256)
def _merged(base: Limits, override: Limits) -> Limits:
    """Limits.merge, kept: the same few pairs come with every exec (a
    group's applied limits and the exec's), and a new Limits validates every
    field again.  Limits are frozen, so a kept one is as good as a new one."""
    return base._merge(override)


def check_limits(option: str, value: object) -> Limits | None:
    if value is None or isinstance(value, Limits):
        return value
    if isinstance(value, dict):
        try:
            return Limits(**value)
        except TypeError as e:
            raise ConfigError(
                option, f"{e}; the fields are {', '.join(f.name for f in fields(Limits))}"
            ) from None
    raise ConfigError(option, f"expected a sandbox.Limits, got {type(value).__name__}")
