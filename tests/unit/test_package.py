"""The package's public names load on first use: the pytest plugin, which
every pytest run in an environment with this package loads, pays for none
of the rest."""

from __future__ import annotations

import subprocess
import sys

import sandbox


def test_every_public_name_resolves() -> None:
    assert sorted(sandbox.__all__) == sorted(sandbox._WHERE)
    for name in sandbox.__all__:
        assert getattr(sandbox, name) is not None
    assert sandbox.Sandbox.__module__ == "sandbox._sync"


def test_importing_the_plugin_loads_nothing_heavy() -> None:
    code = (
        "import sys, sandbox.pytest_plugin; "
        "print(sorted(m for m in sys.modules if m.startswith(('sandbox._', 'anyio'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_an_unknown_name_is_an_attribute_error() -> None:
    try:
        sandbox.no_such_name  # noqa: B018
    except AttributeError as e:
        assert "no_such_name" in str(e)
    else:
        raise AssertionError("no AttributeError")
