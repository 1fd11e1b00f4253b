"""ExecResult: how a command ended, with its output and accounting."""

from __future__ import annotations

import base64
import json
import signal as _signal
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import ExecFailed


@dataclass(frozen=True)
class ExecResult:
    # Left out of the hash (not out of equality): a list has no hash, and
    # hash(result) raised TypeError.  It stays a list, not a tuple: a tuple
    # would make `r.argv == ["sh", ...]` false and change the repr and the
    # ExecFailed message.  Equal results still hash alike (the other fields).
    argv: list[str] = field(hash=False)
    exit_code: int | None
    """The exit status, or None when the command was killed by a signal."""
    signal: int | None
    stdout: bytes = field(repr=False)
    stderr: bytes = field(repr=False)
    reason: str
    """Why it ended: "exited", "signaled", or the limit that ended it:
    "timeout" (wall clock), "cpu_time", "oom" (the OOM killer ended a
    process of it), "pids" (a fork was refused), "output_limit" (output went
    over the cap: cut there), "file_size", "seccomp" (a kill action of the
    seccomp profile)."""
    wall_time: float
    cpu_time: float
    """cpu_user + cpu_sys."""
    max_rss: int
    """Peak resident memory of the command's main process, in bytes."""
    cpu_user: float = 0.0
    """CPU seconds in user mode of every process of the command (its cgroup's
    count; without a cgroup, what wait4 counted: the processes it waited for)."""
    cpu_sys: float = 0.0
    max_memory: int | None = None
    """Peak memory of every process of the command (its cgroup's), in bytes;
    None for a command that ran in no cgroup (no limit of it needed one)."""
    pids_peak: int | None = None
    """Most processes at once, where the kernel counts it."""
    truncated: bool = False
    """Output went over the `output` limit and was cut there."""
    syscall: str | None = None
    """With reason "seccomp": the system call a kill action of the profile
    stopped ("mkdir"), where the init could learn it."""

    @property
    def returncode(self) -> int:
        """subprocess's convention: the exit status, or -N for signal N."""
        if self.exit_code is not None:
            return self.exit_code
        return -(self.signal or 0)

    @property
    def ok(self) -> bool:
        return self.reason == "exited" and self.exit_code == 0

    @property
    def stdout_text(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    @property
    def stderr_text(self) -> str:
        return self.stderr.decode("utf-8", "replace")

    def describe(self) -> str:
        if self.reason == "timeout":
            return f"a timeout after {self.wall_time:.3f} s"
        if self.reason in ("cpu_time", "oom", "pids", "output_limit", "file_size"):
            return f"the {self.reason} limit"
        if self.reason == "seccomp" and self.syscall:
            return f"the seccomp profile (it forbids {self.syscall})"
        if self.signal is not None:
            try:
                name = _signal.Signals(self.signal).name
            except ValueError:
                name = f"signal {self.signal}"
            return f"{name} ({self.reason})"
        return f"exit status {self.exit_code}"

    def check(self) -> ExecResult:
        """Raise ExecFailed unless the command exited with status 0."""
        if not self.ok:
            raise ExecFailed(self)
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: stdout and stderr as text (undecodable bytes replaced
        with U+FFFD), and, only when they are not valid UTF-8,
        `stdout_base64`/`stderr_base64` with the exact bytes: a reader
        checks for the key instead of getting replaced bytes silently."""
        d = asdict(self)
        for name in ("stdout", "stderr"):
            raw: bytes = getattr(self, name)
            try:
                d[name] = raw.decode("utf-8")
            except UnicodeDecodeError:
                d[name] = raw.decode("utf-8", "replace")
                d[name + "_base64"] = base64.b64encode(raw).decode("ascii")
        d["returncode"] = self.returncode
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict())
