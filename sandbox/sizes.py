"""Human sizes and durations for options: "256M", "1.5G", 4096; 2.5 seconds."""

from __future__ import annotations

import math
import re
from decimal import Decimal

from .errors import ConfigError

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)
# The largest size: it must fit the kernel's signed 64-bit counts (cgroup
# limits, tmpfs size=) and the init's 64-bit rlimit fields, below
# RLIM_INFINITY.  Above it an exec failed deep inside (struct.error).
MAX_SIZE = (1 << 63) - 1
# The longest duration: Python's clocks and waits take at most ~9.2e9 s
# (2**63 ns); beyond that a deadline raised OverflowError inside exec().
MAX_SECONDS = 1e9


def shown(value: object) -> str:
    """A bad value as an error message shows it: repr() cut short.  An int
    of more than 4300 digits has no repr (ValueError), and a long one says
    nothing a reader could use."""
    if isinstance(value, int) and value.bit_length() > 100:
        return f"{'a negative' if value < 0 else 'an'} int of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:50]}... ({len(text)} characters)"


def parse_size(option: str, value: object, *, minimum: int = 1) -> int:
    """Bytes from an int or a string such as "256M" (binary multiples, as
    Docker), from `minimum` to MAX_SIZE."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ConfigError(option, f"expected a size such as 256M or a number of bytes, got {shown(value)}")
    if isinstance(value, int):
        n = value
    else:
        m = _SIZE.match(value)
        if not m:
            raise ConfigError(
                option,
                f"{shown(value)} is not a size: "
                'write a number with an optional unit K, M, G or T, e.g. "256M"',
            )
        # Decimal, not float: a float of 400 nines is inf (int(inf) raised
        # OverflowError); and more than 19 digits before the point are past
        # MAX_SIZE already, without making an int of thousands of digits
        number = m.group(1)
        if len(number.partition(".")[0].lstrip("0")) > 19:
            n = MAX_SIZE + 1
        else:
            n = int(Decimal(number) * _UNITS[m.group(2).lower()])
    if n < minimum:
        raise ConfigError(option, f"{shown(value)} is too small: the minimum is {minimum} bytes")
    if n > MAX_SIZE:
        raise ConfigError(option, f"{shown(value)} is too large: the maximum is 8 EiB (2**63 - 1 bytes)")
    return n


def parse_seconds(option: str, value: object) -> float:
    """Positive, finite seconds, at most MAX_SECONDS, from an int or a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(option, f"expected seconds as a number, got {shown(value)}")
    try:
        v = float(value)
    except OverflowError:  # an int too large for a float: 10**400
        v = math.inf if value > 0 else -math.inf
    if math.isnan(v) or v <= 0:
        raise ConfigError(option, f"must be a positive number of seconds, got {shown(value)}")
    if v > MAX_SECONDS:
        raise ConfigError(
            option, f"{shown(value)} is too long: the maximum is {MAX_SECONDS:g} seconds (31 years)"
        )
    return v
