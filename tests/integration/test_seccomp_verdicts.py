"""What a seccomp kill looks like in an ExecResult, and log mode."""

from __future__ import annotations

import signal

import pytest

from sandbox import ConfigError, Sandbox
from tests.conftest import require_sandbox_host

pytestmark = pytest.mark.integration

KILL_MKDIR = {
    "defaultAction": "SCMP_ACT_ALLOW",
    "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_KILL_PROCESS"}],
}


def test_a_kill_action_is_reason_seccomp(busybox_rootfs) -> None:
    require_sandbox_host()
    with Sandbox(rootfs=busybox_rootfs, seccomp=KILL_MKDIR) as sb:
        r = sb.exec(["mkdir", "/tmp/x"])
        assert r.reason == "seccomp"
        assert r.signal == signal.SIGSYS
        assert r.exit_code is None
        # other commands are untouched
        ok = sb.exec(["touch", "/tmp/y"])
        assert ok.reason == "exited" and ok.exit_code == 0


def test_an_ordinary_signal_is_still_signaled(busybox_rootfs) -> None:
    require_sandbox_host()
    with Sandbox(rootfs=busybox_rootfs) as sb:
        r = sb.exec(["sh", "-c", "kill -TERM $$"])
        assert (r.reason, r.signal) == ("signaled", signal.SIGTERM)


def test_log_mode_runs_and_keeps_the_filter(busybox_rootfs) -> None:
    require_sandbox_host()
    with Sandbox(rootfs=busybox_rootfs, seccomp_log=True) as sb:
        r = sb.exec(["sh", "-c", "grep Seccomp: /proc/self/status"])
        assert r.exit_code == 0
        assert r.stdout.split() == [b"Seccomp:", b"2"]


def test_log_mode_takes_a_boolean(busybox_rootfs) -> None:
    with pytest.raises(ConfigError, match="seccomp_log"):
        Sandbox(rootfs=busybox_rootfs, seccomp_log="yes")  # type: ignore[arg-type]
