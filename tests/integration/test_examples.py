"""Every example runs, and says what the README and its docstring promise."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require_sandbox_host

pytestmark = pytest.mark.integration
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run(name: str, busybox_rootfs: Path) -> str:
    require_sandbox_host()
    env = dict(os.environ, SANDBOX_HOME=str(busybox_rootfs.parent.parent))
    r = subprocess.run(
        [sys.executable, str(EXAMPLES / name)], env=env, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def test_hello(busybox_rootfs: Path) -> None:
    out = run("hello.py", busybox_rootfs).splitlines()
    assert out[0] == "hello from hello, uid 0"
    assert out[1].startswith("[REDACTED] (exited, ")  # the secret never shows
    assert out[2] == "sleep 10 with timeout=0.2: timeout"
    assert out[3].endswith("Operation not permitted")  # seccomp: no namespaces inside
    assert out[4] == "sorted: ['1', '2', '3']"
    assert out[5].startswith("error: exec /bin/nosuch: No such file or directory (ENOENT)")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_webserver(busybox_rootfs: Path) -> None:
    """A server in a bridge-mode sandbox, published on the host, answers
    the host at 127.0.0.1:PORT."""
    port = _free_port()
    out = run_args(["webserver.py", str(port)]).splitlines()
    assert out[0].startswith(f"GET http://127.0.0.1:{port}/ -> 200 (server at 10."), out
    assert out[1] == "<h1>hello from a sandbox</h1>"


def run_args(argv: list[str]) -> str:
    """An example with arguments, in the default store (its image is there)."""
    require_sandbox_host()
    r = subprocess.run(
        [sys.executable, str(EXAMPLES / argv[0]), *argv[1:]], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout
