"""Human sizes and durations for options: "256M", "1.5G", 4096; 2.5 seconds."""

from __future__ import annotations

import math
import re

from .errors import ConfigError

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)


def parse_size(option: str, value: object, *, minimum: int = 1) -> int:
    """Bytes from an int or a string such as "256M" (binary multiples, as Docker)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ConfigError(option, f"expected a size such as 256M or a number of bytes, got {value!r}")
    if isinstance(value, int):
        n = value
    else:
        m = _SIZE.match(value)
        if not m:
            raise ConfigError(
                option,
                f'{value!r} is not a size: write a number with an optional unit K, M, G or T, e.g. "256M"',
            )
        n = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if n < minimum:
        raise ConfigError(option, f"{value!r} is too small: the minimum is {minimum} bytes")
    return n


def parse_seconds(option: str, value: object) -> float:
    """Positive, finite seconds from an int or a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(option, f"expected seconds as a number, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(option, f"must be a positive number of seconds, got {value!r}")
    return float(value)
