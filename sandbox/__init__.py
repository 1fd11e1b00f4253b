"""Run untrusted code in real Linux containers, from Python, with no daemon.

from sandbox import Sandbox
with Sandbox(rootfs="/var/lib/sandbox/rootfs/busybox") as sb:
    print(sb.exec(["echo", "hello"]).stdout)
"""

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
from .result import ExecResult
from .spec import IdMap, Mount

__all__ = [
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
]
__version__ = "0.1.0"
