"""The exceptions of the sandbox SDK, one tree::

    SandboxError                   base of everything raised on purpose
    ├── ConfigError (ValueError)   bad input: names the option and the fix
    ├── HostError                  the host lacks something (a kernel feature,
    │                              a permission, the built extension)
    ├── LaunchError                starting the sandbox failed at a named step
    ├── ExecError                  a command could not be started
    │   └── CommandNotFound        ... because its binary does not exist
    ├── FileOpError (OSError)      a `files` operation inside the sandbox failed
    ├── ProtocolError              the sandbox sent something malformed
    ├── SandboxClosed              the sandbox is not running
    └── ExecFailed                 ExecResult.check() on an unsuccessful run

Messages are shaped "what failed: OS error; what to change".  Low-level
errors are mapped here, in one place (`os_error_text`), and chained with
``from``.  Text that comes from inside the sandbox is untrusted: it is
shown with repr() and cut short, never interpreted.
"""

from __future__ import annotations

import errno as _errno
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .result import ExecResult


def os_error_text(err: int) -> str:
    """'No such file or directory (ENOENT)' for an errno value."""
    name = _errno.errorcode.get(err, f"errno {err}")
    return f"{os.strerror(err)} ({name})"


class SandboxError(Exception):
    """Base of every exception this package raises on purpose."""


class ConfigError(SandboxError, ValueError):
    """An option has a bad value.  `option` names it."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"{option}: {message}")
        self.option = option


class HostError(SandboxError):
    """The host cannot run sandboxes as asked (missing feature or permission)."""


class LaunchError(SandboxError):
    """The sandbox could not be started; `step` and `errno` say where and why."""

    def __init__(self, step: str, err: int, detail: str = "", hint: str = "") -> None:
        text = f"sandbox start failed at {step}"
        if detail:
            text += f" ({detail})"
        text += f": {os_error_text(err)}"
        if hint:
            text += f"; {hint}"
        super().__init__(text)
        self.step = step
        self.errno = err


class ExecError(SandboxError):
    """A command could not be started inside the sandbox."""

    def __init__(self, message: str, err: int = 0, stage: str = "") -> None:
        super().__init__(message)
        self.errno = err
        self.stage = stage


class CommandNotFound(ExecError):
    """The command's binary does not exist in the sandbox."""


class FileOpError(SandboxError, OSError):
    """A `files` operation failed inside the sandbox."""

    def __init__(self, op: str, path: str, err: int, detail: str = "") -> None:
        OSError.__init__(self, err, f"{op} {path}: {detail or os_error_text(err)}")
        self.path = path

    def __str__(self) -> str:
        return str(self.args[1])


class ProtocolError(SandboxError):
    """The sandbox's init sent a message that does not parse."""


class SandboxClosed(SandboxError):
    """The sandbox is not running (not started yet, closed, or it died)."""


class ExecFailed(SandboxError):
    """Raised by ExecResult.check() when a run did not exit with status 0."""

    def __init__(self, result: ExecResult) -> None:
        tail = result.stderr[-500:].decode("utf-8", "replace").strip()
        text = f"command {result.argv!r} ended with {result.describe()}"
        if tail:
            text += f"; stderr ends with: {tail!r}"
        super().__init__(text)
        self.result = result
