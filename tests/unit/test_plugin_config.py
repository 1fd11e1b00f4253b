"""The pytest plugin's --sandbox-memory, --sandbox-timeout and
--sandbox-network (and their ini keys) are checked once, when pytest starts: a bad value is one usage error
naming the option and what it takes, before any test runs, not the same
error in every test that uses a fixture.  Nothing here makes a sandbox."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox.pytest_plugin import _defaults

PROJECT = Path(__file__).resolve().parent.parent.parent


class _Config:
    """What _defaults asks of a pytest.Config: options and ini values."""

    def __init__(self, options: dict[str, str] | None = None, ini: dict[str, str] | None = None) -> None:
        self.options, self.ini = options or {}, ini or {}

    def getoption(self, name: str, default: object = None) -> object:
        return self.options.get(name.removeprefix("sandbox_"), default)

    def getini(self, name: str) -> object:
        return self.ini.get(name.removeprefix("sandbox_"))


def defaults(**kw: dict[str, str]) -> dict[str, object]:
    return _defaults(_Config(**kw))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("memory", "12Q", "is not a size"),
        ("memory", "-1", "is not a size"),
        ("memory", "1", "too small: the minimum is 4096 bytes"),
        ("memory", "9E", "is not a size"),
        ("memory", "99999999999T", "too large"),
        ("timeout", "soon", "is not a number of seconds"),
        ("timeout", "0", "must be a positive number of seconds"),
        ("timeout", "-3", "must be a positive number of seconds"),
        ("timeout", "nan", "must be a positive number of seconds"),
        ("timeout", "inf", "too long"),
        ("timeout", "1e10", "too long"),
    ],
)
def test_a_bad_value_is_a_usage_error_naming_where_it_was_given(name: str, value: str, says: str) -> None:
    with pytest.raises(pytest.UsageError) as e:
        defaults(options={name: value})
    assert str(e.value).startswith(f"--sandbox-{name}: "), e.value
    assert says in str(e.value) and "limits." not in str(e.value), e.value
    with pytest.raises(pytest.UsageError) as e:
        defaults(ini={name: value})
    assert str(e.value).startswith(f"sandbox_{name} (ini): "), e.value


@pytest.mark.parametrize("value", ["bridge0", "host", "Bridge"])
def test_a_bad_network_is_a_usage_error_naming_where_it_was_given(value: str) -> None:
    with pytest.raises(pytest.UsageError) as e:
        defaults(options={"network": value})
    assert str(e.value) == f'--sandbox-network: {value!r} is not a network: use "none" or "bridge"'
    with pytest.raises(pytest.UsageError) as e:
        defaults(ini={"network": value})
    assert str(e.value).startswith("sandbox_network (ini): ")


def test_good_networks_are_kept() -> None:
    assert defaults(options={"network": "bridge"})["network"] == "bridge"
    assert defaults(ini={"network": "none"})["network"] == "none"


def test_good_values_are_kept_as_limits_takes_them() -> None:
    got = defaults(options={"memory": "256M", "timeout": "2.5"})
    assert got == {"image": "debian", "limits": {"memory": 256 << 20, "timeout": 2.5}}
    assert defaults(ini={"memory": "4096", "timeout": "30"})["limits"] == {"memory": 4096, "timeout": 30.0}


def test_the_command_line_wins_over_the_ini_file() -> None:
    """A bad ini value under a good command-line one is never looked at."""
    got = defaults(options={"timeout": "5"}, ini={"timeout": "soon", "image": "python"})
    assert got == {"image": "python", "limits": {"timeout": 5.0}}


def test_an_empty_command_line_value_drops_the_ini_files() -> None:
    got = defaults(
        options={"timeout": "", "memory": "", "network": ""}, ini={"timeout": "5", "network": "bridge"}
    )
    assert got == {"image": "debian"}


def run_pytest(where: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (where / "test_one.py").write_text(
        "import pytest\n"
        "@pytest.mark.sandbox(rootfs='/nonexistent')\n"
        "@pytest.mark.parametrize('n', range(3))\n"
        "def test_one(sandbox, n):\n"
        "    pass\n"
    )
    env = dict(os.environ, PYTHONPATH=str(PROJECT))  # this tree's plugin, by its entry point
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args, str(where)],
        cwd=where,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_pytest_stops_at_configure_with_one_error(tmp_path: Path) -> None:
    """Before: each of the three tests errored at its fixture's setup."""
    r = run_pytest(tmp_path, "--sandbox-memory=12Q")
    assert r.returncode == pytest.ExitCode.USAGE_ERROR, r.stdout + r.stderr
    assert r.stderr.count("ERROR: --sandbox-memory: '12Q' is not a size") == 1, r.stderr
    assert "test_one" not in r.stdout, r.stdout


def test_an_ini_value_stops_pytest_as_well(tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text("[pytest]\nsandbox_timeout = soon\n")
    r = run_pytest(tmp_path)
    assert r.returncode == pytest.ExitCode.USAGE_ERROR, r.stdout + r.stderr
    assert "ERROR: sandbox_timeout (ini): 'soon' is not a number of seconds" in r.stderr, r.stderr
