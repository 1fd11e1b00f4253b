"""sandbox.sizes: human sizes and seconds for options."""

from __future__ import annotations

import math

import pytest

from sandbox.errors import ConfigError
from sandbox.sizes import parse_seconds, parse_size

K, M, G, T = 1 << 10, 1 << 20, 1 << 30, 1 << 40


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (4096, 4096),
        ("4096", 4096),
        ("1k", K),
        ("1K", K),
        ("1KB", K),
        ("1KiB", K),
        ("256M", 256 * M),
        ("256m", 256 * M),
        ("256MiB", 256 * M),
        ("1.5G", 3 * G // 2),
        ("1G", G),
        ("2T", 2 * T),
        (" 64 M ", 64 * M),
        ("1b", 1),
    ],
)
def test_parse_size_accepts(text: object, expected: int) -> None:
    assert parse_size("disk", text) == expected


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "M",
        "abc",
        "-1",
        "-1M",
        "1X",
        "1MM",
        "1.5.5G",
        "1e6",
        "0x10",
        "1 G B",
        "½G",
        None,
        1.5,
        True,
        False,
        b"1M",
        [1],
    ],
)
def test_parse_size_rejects_naming_the_option(bad: object) -> None:
    with pytest.raises(ConfigError) as e:
        parse_size("limits.memory", bad)
    assert e.value.option == "limits.memory"
    assert str(e.value).startswith("limits.memory: ")


@pytest.mark.parametrize("small", [0, "0", "0M", 100, "1023"])
def test_parse_size_minimum(small: object) -> None:
    with pytest.raises(ConfigError, match="too small") as e:
        parse_size("disk", small, minimum=1024)
    assert e.value.option == "disk"


def test_parse_size_default_minimum_is_one_byte() -> None:
    assert parse_size("disk", 1) == 1
    with pytest.raises(ConfigError):
        parse_size("disk", 0)


def test_parse_size_fraction_is_truncated_to_whole_bytes() -> None:
    assert parse_size("disk", "0.5K") == 512
    assert isinstance(parse_size("disk", "1.3K"), int)


@pytest.mark.parametrize(("value", "expected"), [(1, 1.0), (0.25, 0.25), (2.5, 2.5), (10**6, 1e6)])
def test_parse_seconds_accepts(value: object, expected: float) -> None:
    got = parse_seconds("timeout", value)
    assert got == expected
    assert isinstance(got, float)


@pytest.mark.parametrize("bad", [0, 0.0, -1, -0.001, math.nan, math.inf, -math.inf, "1", None, True, [1]])
def test_parse_seconds_rejects_naming_the_option(bad: object) -> None:
    with pytest.raises(ConfigError) as e:
        parse_seconds("timeout", bad)
    assert e.value.option == "timeout"
    assert str(e.value).startswith("timeout: ")
