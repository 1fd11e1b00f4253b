"""`sandbox doctor` reads the host and tries a real sandbox start."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sandbox import doctor
from tests.conftest import require_sandbox_host

pytestmark = pytest.mark.integration


def test_every_check_has_a_status_and_failures_have_a_fix() -> None:
    for c in doctor.run():
        assert c.status in (doctor.OK, doctor.WARN, doctor.FAIL), c
        if c.status != doctor.OK:
            assert c.fix, f"{c.name} says {c.status} without saying how to fix it"


def test_doctor_starts_a_sandbox(busybox_rootfs) -> None:
    require_sandbox_host()
    env = {"SANDBOX_HOME": str(busybox_rootfs.parent.parent), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    r = subprocess.run(
        [sys.executable, "-m", "sandbox.cli", "doctor"], capture_output=True, text=True, env=env, timeout=60
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ok  sandbox start: a sandbox from" in r.stdout
    assert "FAIL" not in r.stdout


def test_a_failing_check_fails_the_command(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from sandbox import cli

    monkeypatch.setattr(doctor, "CHECKS", (lambda: doctor.Check("x", doctor.FAIL, "broken", "mend it"),))
    assert cli.main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  x: broken" in out and "fix: mend it" in out
