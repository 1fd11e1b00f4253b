"""The forms a secret is scrubbed in, and the cut the output cap makes."""

from __future__ import annotations

from sandbox.redact import REDACTED, forms, scrub


def test_forms_cover_the_final_newline_a_pty_and_each_line() -> None:
    f = forms((b"line-one\nline-two\n", b"abc"))
    assert f[0] == b"line-one\r\nline-two\r\n"  # longest first
    assert set(f) == {b"line-one\r\nline-two\r\n", b"line-one\nline-two\n", b"line-one\nline-two",
                      b"line-one", b"line-two"}  # fmt: skip
    assert b"abc" not in f  # under REDACT_MIN: it would scrub ordinary output


def test_scrub_replaces_every_form_and_a_cut_one_only_at_the_end() -> None:
    f = forms((b"s3cret-value\n",))
    assert scrub(b"x=s3cret-value;", f, cut=False) == b"x=" + REDACTED + b";"
    assert scrub(b"pad s3cret-va", f, cut=True) == b"pad " + REDACTED
    assert scrub(b"pad s3cret-va", f, cut=False) == b"pad s3cret-va"  # the command's own choice
    assert scrub(b"pad s3c", f, cut=True) == b"pad s3c"  # under REDACT_MIN left of it: not told apart
