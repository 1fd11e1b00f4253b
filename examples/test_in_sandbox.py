"""Tests that each get a fresh sandbox, through the pytest plugin.

    sudo .venv/bin/python -m pytest -p sandbox examples/test_in_sandbox.py        # -p: if not installed
    sudo .venv/bin/python -m pytest -n 2 examples/test_in_sandbox.py               # pytest-xdist

The `sandbox` fixture is a running sandbox (image "debian" unless a
`@pytest.mark.sandbox(...)` or `--sandbox-image` says otherwise), closed
after the test; `sandbox_factory(**kwargs)` makes as many as a test wants.
"""

from __future__ import annotations

import pytest

from sandbox import Limits, Sandbox


def test_debian_by_default(sandbox: Sandbox) -> None:
    r = sandbox.exec(["grep", "PRETTY_NAME", "/etc/os-release"])
    assert r.ok and "Debian GNU/Linux 12" in r.stdout_text


def test_a_fresh_sandbox_per_test(sandbox: Sandbox) -> None:
    # test_writes_stay_inside wrote this file in its own sandbox: never here
    assert not sandbox.files.is_dir("/tmp/from-another-test")
    sandbox.files.mkdir("/tmp/from-another-test")


def test_writes_stay_inside(sandbox: Sandbox) -> None:
    sandbox.files.mkdir("/tmp/from-another-test")
    assert sandbox.exec(["ls", "-d", "/tmp/from-another-test"]).ok


@pytest.mark.sandbox(image="python", limits=Limits(memory="128M", pids=32, timeout=10))
def test_python_image_with_limits(sandbox: Sandbox) -> None:
    r = sandbox.exec(["python3", "-c", "import sys; print(sys.version_info[:2])"])
    assert r.stdout_text.strip() == "(3, 11)"
    r = sandbox.exec(["python3", "-c", "b = bytearray(b'x') * (1 << 30)"])
    assert r.reason == "oom"  # the marker's memory limit


@pytest.mark.sandbox(image="busybox", hostname="tiny")
def test_marker_passes_any_sandbox_option(sandbox: Sandbox) -> None:
    assert sandbox.exec(["hostname"]).stdout_text.strip() == "tiny"


@pytest.mark.sandbox(image="busybox")
def test_factory_makes_isolated_sandboxes(sandbox_factory: object) -> None:
    make = sandbox_factory
    assert callable(make)
    a, b = make(), make(hostname="b")
    a.files.write_text("/tmp/only-in-a", "a")
    assert a.exec(["cat", "/tmp/only-in-a"]).stdout == b"a"
    assert b.exec(["cat", "/tmp/only-in-a"]).reason == "exited"
    assert not b.exec(["cat", "/tmp/only-in-a"]).ok
    assert b.exec(["hostname"]).stdout_text.strip() == "b"


@pytest.mark.sandbox(image="busybox", network="none")
def test_network_none_is_loopback_only(sandbox: Sandbox) -> None:
    lines = sandbox.exec(["cat", "/proc/net/dev"]).stdout_text.splitlines()[2:]
    assert [x.split(":")[0].strip() for x in lines] == ["lo"]
