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


def test_a_stream_fed_in_any_pieces_comes_out_scrubbed() -> None:
    """Scrubber: a secret cut anywhere between reads is still scrubbed whole;
    what cannot start a secret goes out at once; what may is held until the
    next bytes tell (or the end)."""
    from sandbox.redact import Scrubber

    f = forms((b"hunter2-secret\n",))
    text = b"log: hunter2-secret and hunter2-secre hun hunter2-secret"
    want = scrub(text, f, cut=False)
    for size in range(1, len(text) + 1):
        s = Scrubber(f)
        pieces = [text[i : i + size] for i in range(0, len(text), size)]
        assert b"".join(s.feed(p) for p in pieces) + s.end() == want, size
    s = Scrubber(f)
    assert s.feed(b"prompt> ") == b"prompt> "  # nothing held: nothing of it starts a secret
    assert s.feed(b"ok hunt") == b"ok "  # held: maybe the secret's start
    assert s.end() == b"hunt"
