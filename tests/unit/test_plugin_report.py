"""The pytest plugin's report of a failing test's last exec: the sandbox's
output is untrusted, so a terminal's control sequences in it are shown
escaped, never sent to the reader's terminal.  The recorder wrapping exec
leaves the SDK's own errors for bad input as they are."""

from __future__ import annotations

import pytest

from sandbox.errors import ConfigError
from sandbox.pytest_plugin import _Record, _recording, _shown
from sandbox.result import ExecResult
from sandbox.spec import check_argv


def test_control_sequences_are_escaped_lines_and_tabs_kept() -> None:
    out = _shown(b"col\tline\n\x1b]0;title\x07\x1b[2J\rpart\xc2\x9bend\x7f")
    assert out == "col\tline\n\\x1b]0;title\\x07\\x1b[2J\\x0dpart\\x9bend\\x7f"
    assert all(c in "\t\n" or c.isprintable() for c in out)


def test_text_and_bad_utf8() -> None:
    assert _shown("héllo wörld\n".encode()) == "héllo wörld\n"
    assert _shown(b"\xff\xfe") == "\ufffd\ufffd"


class _Box:
    """What _recording wraps: an exec that checks argv as Sandbox.exec does."""

    def exec(self, argv: object, **kwargs: object) -> ExecResult:
        args = check_argv(argv)
        return ExecResult(args, 0, None, b"", b"", "exited", 0.0, 0.0, 0)


def recorded(argv: object) -> tuple[BaseException | None, _Record]:
    box, rec = _Box(), _Record("sandbox fixture")
    _recording(box, rec)  # type: ignore[arg-type]
    try:
        box.exec(argv)
    except BaseException as e:
        return e, rec
    return None, rec


@pytest.mark.parametrize("argv", [5, None, "ls -l", b"ls", iter(["ls"])])
def test_a_bad_argv_raises_the_sdks_config_error_and_is_recorded_as_given(argv: object) -> None:
    """The recorder ran list(argv) first: exec(5) raised its TypeError, not
    the SDK's ConfigError, and "ls -l" was recorded as ['l', 's', ' ', ...]."""
    err, rec = recorded(argv)
    assert isinstance(err, ConfigError) and err.option == "argv", err
    assert rec.argv is argv and rec.execs == 1
    assert rec.text().splitlines()[1:] == [f"argv: {argv!r}", f"error: ConfigError: {err}"]


def test_a_good_argv_is_recorded_as_a_copy() -> None:
    argv = ["sh", "-c", "true"]
    err, rec = recorded(argv)
    assert err is None and rec.result is not None
    argv.append("changed later")
    assert rec.argv == ["sh", "-c", "true"]
    assert rec.text().splitlines()[1] == "argv: ['sh', '-c', 'true']"
