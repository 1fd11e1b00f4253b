"""Run untrusted code in real Linux containers, from Python, with no daemon.

from sandbox import Sandbox
with Sandbox(rootfs="/var/lib/sandbox/rootfs/busybox") as sb:
    print(sb.exec(["echo", "hello"]).stdout)

The names below are loaded on first use (PEP 562): importing a submodule,
such as the pytest plugin that every pytest run in an environment with
this package loads, costs nothing of the rest (~80 ms, mostly anyio).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._async import AsyncProcess, AsyncSandbox
    from ._base import DEVNULL, PIPE
    from ._sync import Process, Sandbox
    from .errors import (
        CommandNotFound,
        ConfigError,
        ExecError,
        ExecFailed,
        FileOpError,
        HostError,
        LaunchError,
        ProtocolError,
        SandboxClosed,
        SandboxError,
    )
    from .limits import Limits
    from .network import Network
    from .reaper import wait_closed
    from .result import ExecResult
    from .spec import IdMap, Mount

_WHERE = {
    "AsyncProcess": "_async",
    "AsyncSandbox": "_async",
    "DEVNULL": "_base",
    "PIPE": "_base",
    "Process": "_sync",
    "Sandbox": "_sync",
    "Limits": "limits",
    "Network": "network",
    "ExecResult": "result",
    "IdMap": "spec",
    "Mount": "spec",
    "wait_closed": "reaper",
    **{
        name: "errors"
        for name in (
            "CommandNotFound",
            "ConfigError",
            "ExecError",
            "ExecFailed",
            "FileOpError",
            "HostError",
            "LaunchError",
            "ProtocolError",
            "SandboxClosed",
            "SandboxError",
        )
    },
}

__all__ = [  # = sorted(_WHERE), spelled out for the linters
    "DEVNULL",
    "PIPE",
    "AsyncProcess",
    "AsyncSandbox",
    "CommandNotFound",
    "ConfigError",
    "ExecError",
    "ExecFailed",
    "ExecResult",
    "FileOpError",
    "HostError",
    "IdMap",
    "LaunchError",
    "Limits",
    "Mount",
    "Network",
    "Process",
    "ProtocolError",
    "Sandbox",
    "SandboxClosed",
    "SandboxError",
    "wait_closed",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        try:
            return importlib.import_module(f".{name}", __name__)  # a submodule: sandbox.cgroup, ...
        except ModuleNotFoundError:
            raise AttributeError(f"module 'sandbox' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f".{where}", __name__), name)
    globals()[name] = value  # once
    return value


def __dir__() -> list[str]:
    return sorted([*__all__, "__version__"])
