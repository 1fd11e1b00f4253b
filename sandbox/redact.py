"""Secret values scrubbed from captured output (`redact_secrets=True`).

This guards against accidental echoes (a log line, a traceback, `env`), not
against a hostile command: one that wants a secret out encodes it first
(base64, `rev`).  So it covers the forms an honest program prints a secret
in: the value as written, without its final newline (secrets from files end
with one; `$(cat ...)`, `.strip()` and `read` drop it), with "\\r\\n" for
"\\n" (a pty's onlcr), and each of its lines alone (a PEM key's).  Nothing
under REDACT_MIN bytes: that would scrub ordinary output."""

from __future__ import annotations

from functools import lru_cache

REDACTED = b"[REDACTED]"
REDACT_MIN = 4  # bytes


@lru_cache(maxsize=64)  # asked per exec, for a sandbox's same few secrets
def forms(secrets: tuple[bytes, ...]) -> tuple[bytes, ...]:
    """What to look for, longest first: one secret inside another is
    scrubbed whole."""
    out: set[bytes] = set()
    for s in secrets:
        out.update((s, s.rstrip(b"\r\n"), s.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")))
        out.update(line.rstrip(b"\r") for line in s.split(b"\n"))
    return tuple(sorted((f for f in out if len(f) >= REDACT_MIN), key=len, reverse=True))


def scrub(data: bytes, found: tuple[bytes, ...], cut: bool) -> bytes:
    """`data` with every form in `found` replaced.  `cut`: the output cap
    ended the stream, maybe inside a secret: an end of it that begins one
    goes too."""
    for f in found:
        data = data.replace(f, REDACTED)
    if cut:
        for f in found:
            for k in range(len(f) - 1, REDACT_MIN - 1, -1):
                if data.endswith(f[:k]):
                    return data[:-k] + REDACTED
    return data


def _open_end(data: bytes, found: tuple[bytes, ...]) -> int:
    """How many bytes at the end of `data` may be the start of a form (so
    the next bytes could complete it): the longest such end, 0 for none."""
    best = 0
    for f in found:
        span = min(len(f) - 1, len(data))
        i = len(data) - span
        while span > best:
            i = data.find(f[:1], i)
            if i < 0:
                break
            if f.startswith(data[i:]):
                best = len(data) - i
                break
            i += 1
            span = len(data) - i
    return best


class Scrubber:
    """Redaction of a stream as it is read (a spawn's stdout that the
    caller reads itself): what may be the start of a secret is held back
    until the next bytes show it is not one, or until the stream ends.  So
    a prompt whose last bytes are how a secret begins waits for more."""

    def __init__(self, found: tuple[bytes, ...]) -> None:
        self.found = found
        self.held = b""

    def feed(self, data: bytes) -> bytes:
        """What may be passed on of what was held and `data`, scrubbed."""
        buf = scrub(self.held + data, self.found, False)
        k = _open_end(buf, self.found)
        self.held = buf[len(buf) - k :]
        return buf[: len(buf) - k]

    def end(self) -> bytes:
        """At the end of the stream: what was held (no secret can follow)."""
        out, self.held = self.held, b""
        return out
