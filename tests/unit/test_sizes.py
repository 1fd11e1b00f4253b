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


@pytest.mark.parametrize(
    "huge",
    [
        "9" * 400,
        pytest.param("9" * 100_000, id="100000-nines"),
        "8388608T",
        "99999999T",
        2**63,
        10**400,
        pytest.param(10**5000, id="10**5000"),
    ],
)
def test_parse_size_refuses_what_no_64_bit_count_holds(huge: object) -> None:
    """A ConfigError naming the option, not OverflowError (a float of 400
    nines is inf), nor a struct.error or EINVAL from deep inside an exec;
    and an int of 5000 digits, which has no repr, is named without one."""
    with pytest.raises(ConfigError, match="too large") as e:
        parse_size("limits.memory", huge)
    assert e.value.option == "limits.memory"
    assert len(str(e.value)) < 200


def test_parse_size_is_exact_up_to_the_maximum() -> None:
    """Digits are not rounded through a float: 2**63 - 1 as text stays
    itself (a float made it 2**63, past the maximum)."""
    assert parse_size("disk", 2**63 - 1) == 2**63 - 1
    assert parse_size("disk", "9223372036854775807") == 2**63 - 1
    assert parse_size("disk", "0000000000000000000000001G") == G
    assert parse_size("disk", "8388607.5T") == 8388607 * T + T // 2


@pytest.mark.parametrize("huge", [1e10, 1e300, 10**400, pytest.param(10**5000, id="10**5000")])
def test_parse_seconds_refuses_what_no_clock_waits_for(huge: object) -> None:
    """Python's waits take at most ~9.2e9 s: a timeout of 1e10 raised
    OverflowError inside exec(), 10**400 inside the check itself."""
    with pytest.raises(ConfigError, match="too long") as e:
        parse_seconds("timeout", huge)
    assert e.value.option == "timeout"
    assert len(str(e.value)) < 200


def test_parse_seconds_takes_up_to_a_billion_seconds() -> None:
    assert parse_seconds("timeout", 10**9) == 1e9
    with pytest.raises(ConfigError, match="positive") as e:
        parse_seconds("timeout", -(10**400))
    assert e.value.option == "timeout"
