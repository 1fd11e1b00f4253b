"""The pytest plugin's report of a failing test's last exec: the sandbox's
output is untrusted, so a terminal's control sequences in it are shown
escaped, never sent to the reader's terminal."""

from __future__ import annotations

from sandbox.pytest_plugin import _shown


def test_control_sequences_are_escaped_lines_and_tabs_kept() -> None:
    out = _shown(b"col\tline\n\x1b]0;title\x07\x1b[2J\rpart\xc2\x9bend\x7f")
    assert out == "col\tline\n\\x1b]0;title\\x07\\x1b[2J\\x0dpart\\x9bend\\x7f"
    assert all(c in "\t\n" or c.isprintable() for c in out)


def test_text_and_bad_utf8() -> None:
    assert _shown("héllo wörld\n".encode()) == "héllo wörld\n"
    assert _shown(b"\xff\xfe") == "\ufffd\ufffd"
