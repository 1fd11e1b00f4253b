"""Limits validation: every field takes its good values (human sizes, float
seconds) and refuses bad ones with a ConfigError naming the field
("limits.memory"); memory_swap rules; cpuset parsing; output_action; how
an exec's limits merge over its sandbox's; the rlimits they become;
check_limits for the `limits=` option.  Nothing here starts a sandbox."""

from __future__ import annotations

import dataclasses
import math
import resource

import pytest

from sandbox import ConfigError, Limits
from sandbox.limits import DEFAULT_OUTPUT, UNLIMITED, check_limits

K, M, G = 1 << 10, 1 << 20, 1 << 30
SIZE_FIELDS = ("memory", "output", "disk", "file_size", "stack")
SECONDS_FIELDS = ("cpu_time", "timeout")
COUNT_FIELDS = ("pids", "open_files")


def refused(option: str, match: str | None = None, **kw: object) -> ConfigError:
    with pytest.raises(ConfigError) as e:
        Limits(**kw)  # type: ignore[arg-type]
    assert e.value.option == option, str(e.value)
    assert str(e.value).startswith(f"{option}: "), str(e.value)
    if match is not None:
        assert match in str(e.value), str(e.value)
    return e.value


def test_defaults_set_nothing() -> None:
    lim = Limits()
    for f in dataclasses.fields(Limits):
        assert getattr(lim, f.name) is None, f.name
    assert not lim.needs_cgroup
    assert not lim.closes_output  # at the output cap: kill, by default


# -- sizes -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SIZE_FIELDS)
@pytest.mark.parametrize(
    ("value", "expected"),
    [("256M", 256 * M), ("1G", G), ("1.5G", 3 * G // 2), ("64k", 64 * K), ("8MiB", 8 * M), (65536, 65536)],
)
def test_sizes_take_human_units(name: str, value: object, expected: int) -> None:
    got = getattr(Limits(**{name: value}), name)  # type: ignore[arg-type]
    assert got == expected and type(got) is int


@pytest.mark.parametrize("name", SIZE_FIELDS)
@pytest.mark.parametrize("bad", ["lots", "", "-1M", "1X", "1e6", 1.5, True, b"1M", [1]])
def test_sizes_refuse_bad_values(name: str, bad: object) -> None:
    refused(f"limits.{name}", **{name: bad})


@pytest.mark.parametrize("name", ["memory", "disk", "file_size", "stack"])
def test_sizes_have_a_page_as_minimum(name: str) -> None:
    assert getattr(Limits(**{name: 4096}), name) == 4096  # type: ignore[arg-type]
    refused(f"limits.{name}", "too small", **{name: 4095})
    refused(f"limits.{name}", "too small", **{name: 0})


def test_output_may_be_zero() -> None:
    """output=0 keeps nothing: a command that must stay silent."""
    assert Limits(output=0).output == 0
    assert Limits(output="0").output == 0
    assert Limits(output=0).kept_output == 0 and Limits(output=0).passed_output == 0
    refused("limits.output", output=-2)


def test_output_kept_is_capped_unless_lifted() -> None:
    """What exec() keeps is host memory: DEFAULT_OUTPUT unless set, -1 for
    no cap; output the caller streams on is capped only when set."""
    assert Limits().kept_output == DEFAULT_OUTPUT == 64 << 20
    assert Limits().passed_output is None
    assert Limits(output=-1).kept_output is None and Limits(output=-1).passed_output is None
    assert Limits(output="1M").kept_output == Limits(output="1M").passed_output == 1 << 20


# -- memory_swap -------------------------------------------------------------------------


def test_memory_swap_defaults_to_no_swap() -> None:
    lim = Limits(memory="256M")
    assert lim.memory_swap is None  # the backends then set swap = memory: no swap


def test_memory_swap_is_memory_plus_swap() -> None:
    assert Limits(memory="256M", memory_swap="512M").memory_swap == 512 * M
    assert Limits(memory="256M", memory_swap="256M").memory_swap == 256 * M
    assert Limits(memory=256 * M, memory_swap=300 * M).memory_swap == 300 * M


def test_memory_swap_minus_one_is_unlimited() -> None:
    assert Limits(memory="256M", memory_swap=-1).memory_swap == UNLIMITED == -1


def test_memory_swap_below_memory_is_refused() -> None:
    e = refused("limits.memory_swap", "below memory", memory="256M", memory_swap="128M")
    assert "'128M'" in str(e)


def test_memory_swap_needs_memory() -> None:
    refused("limits.memory_swap", "set memory too", memory_swap="512M")


@pytest.mark.parametrize("bad", ["lots", -2, "-1", 1.5, True, 100])
def test_memory_swap_bad_values(bad: object) -> None:
    refused("limits.memory_swap", memory="256M", memory_swap=bad)


# -- cpus and cpuset ---------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [(1, 1.0), (1.5, 1.5), (0.01, 0.01), (64, 64.0)])
def test_cpus(value: object, expected: float) -> None:
    got = Limits(cpus=value).cpus  # type: ignore[arg-type]
    assert got == expected and type(got) is float
    assert Limits(cpus=value).needs_cgroup  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [0, 0.005, -1, math.nan, math.inf, "1", "1.5", True, [1]])
def test_cpus_refused(bad: object) -> None:
    refused("limits.cpus", cpus=bad)


@pytest.fixture
def four_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """cpuset checks the CPU numbers against the host's: pretend it has 4."""
    monkeypatch.setattr("sandbox.limits.os.cpu_count", lambda: 4)


@pytest.mark.parametrize("good", ["0", "3", "0-1", "0,2", "0-1,3", "1-3", "0,1,2,3"])
def test_cpuset_accepts_lists_and_ranges(four_cpus: None, good: str) -> None:
    lim = Limits(cpuset=good)
    assert lim.cpuset == good and lim.needs_cgroup


@pytest.mark.parametrize("bad", ["", "a", "1-", "-1", "0,,1", "0-1-2", " 0", "0 ", "0;1", "1.5", 0, ["0"]])
def test_cpuset_refuses_what_is_not_a_cpu_list(four_cpus: None, bad: object) -> None:
    refused("limits.cpuset", cpuset=bad)


@pytest.mark.parametrize("missing", ["4", "0-4", "1,7"])
def test_cpuset_refuses_cpus_the_host_lacks(four_cpus: None, missing: str) -> None:
    refused("limits.cpuset", "does not exist", cpuset=missing)


@pytest.mark.parametrize("bad", ["3-1", "0,2-1", "1-0"])
def test_cpuset_refuses_a_reversed_range(four_cpus: None, bad: str) -> None:
    """The kernel would refuse it at exec time (EINVAL)."""
    refused("limits.cpuset", "reversed range", cpuset=bad)


# -- counts and seconds ------------------------------------------------------------------


@pytest.mark.parametrize("name", COUNT_FIELDS)
def test_counts(name: str) -> None:
    assert getattr(Limits(**{name: 1}), name) == 1  # type: ignore[arg-type]
    assert getattr(Limits(**{name: 4096}), name) == 4096  # type: ignore[arg-type]


@pytest.mark.parametrize("name", COUNT_FIELDS)
@pytest.mark.parametrize("bad", [0, -1, 1.5, "64", True, False])
def test_counts_refused(name: str, bad: object) -> None:
    refused(f"limits.{name}", "positive whole number", **{name: bad})


def test_what_needs_a_cgroup() -> None:
    """The cgroup limits, the exact CPU count of cpu_time, and a timeout (which
    ends every process of the command); not the rlimits nor the output cap."""
    needing = ({"pids": 64}, {"memory": "64M"}, {"cpus": 1}, {"cpuset": "0"}, {"cpu_time": 1}, {"timeout": 1})
    for kw in needing:
        assert Limits(**kw).needs_cgroup, kw  # type: ignore[arg-type]
    assert not Limits(open_files=64, output="1M", file_size="1M", stack="8M").needs_cgroup
    assert not Limits().needs_cgroup


@pytest.mark.parametrize("name", SECONDS_FIELDS)
@pytest.mark.parametrize(("value", "expected"), [(1, 1.0), (0.25, 0.25), (2.5, 2.5)])
def test_seconds(name: str, value: object, expected: float) -> None:
    got = getattr(Limits(**{name: value}), name)  # type: ignore[arg-type]
    assert got == expected and type(got) is float


@pytest.mark.parametrize("name", SECONDS_FIELDS)
@pytest.mark.parametrize("bad", [0, -1, math.nan, math.inf, "1", "1s", True])
def test_seconds_refused(name: str, bad: object) -> None:
    refused(f"limits.{name}", **{name: bad})


@pytest.mark.parametrize(
    ("name", "huge"),
    [
        ("cpus", 10**400),
        ("cpus", 1e300),
        ("cpus", 2**20 + 1),
        ("pids", 2**22 + 1),
        ("pids", 10**30),
        ("open_files", 2**64),
        ("file_size", 2**64),
        ("stack", "99999999T"),
        ("memory", "9" * 400),
        pytest.param("memory", 10**5000, id="memory-10**5000"),
        ("timeout", 1e10),
        ("cpu_time", 10**400),
        pytest.param("output_action", 10**5000, id="output_action-10**5000"),
        pytest.param("cpuset", 10**5000, id="cpuset-10**5000"),
    ],
)
def test_huge_values_are_refused_naming_the_field(name: str, huge: object) -> None:
    """Not OverflowError or ValueError from the check itself, nor a
    struct.error (the init's 64-bit rlimit fields), EINVAL (pids.max above
    the kernel's PID_MAX_LIMIT) or OverflowError (a wait) inside an exec."""
    e = refused(f"limits.{name}", **{name: huge})
    assert len(str(e)) < 200


def test_the_largest_values_fit_what_they_become() -> None:
    from sandbox import protocol

    top = (1 << 63) - 1
    lim = Limits(
        pids=1 << 22,
        cpus=1 << 20,
        open_files=top,
        file_size=top,
        stack=top,
        memory=top,
        cpu_time=1e9,
        timeout=1e9,
    )
    protocol.exec_fixed(0, 0, [], lim.rlimits(), [])  # the init's rlimit records hold them


# -- output_action -----------------------------------------------------------------------


@pytest.mark.parametrize("action", ["kill", "close"])
def test_output_action(action: str) -> None:
    lim = Limits(output="1M", output_action=action)
    assert lim.output_action == action
    assert lim.closes_output == (action == "close")


@pytest.mark.parametrize("bad", ["drop", "", "KILL", 1, True])
def test_output_action_refused(bad: object) -> None:
    e = refused("limits.output_action", output_action=bad)
    assert "kill, close" in str(e)


# -- frozen, merge -----------------------------------------------------------------------


def test_limits_are_frozen() -> None:
    lim = Limits(memory="64M")
    with pytest.raises(dataclasses.FrozenInstanceError):
        lim.memory = 1  # type: ignore[misc]


def test_merge_with_none_is_the_same() -> None:
    lim = Limits(memory="64M", pids=10)
    assert lim.merge(None) is lim


def test_merge_replaces_only_what_the_override_sets() -> None:
    base = Limits(memory="256M", pids=64, timeout=10, output="1M", cpu_time=5)
    got = base.merge(Limits(memory="32M", timeout=1))
    assert got == Limits(memory="32M", pids=64, timeout=1, output="1M", cpu_time=5)
    assert got.memory == 32 * M and got.timeout == 1.0
    assert base.memory == 256 * M  # the sandbox's own are untouched


def test_merge_adds_fields_the_base_lacks() -> None:
    got = Limits().merge(Limits(file_size="1M", open_files=10, cpuset="0"))
    assert (got.file_size, got.open_files, got.cpuset) == (M, 10, "0")


def test_merge_of_output_action() -> None:
    assert Limits(output="1M").merge(Limits(output_action="close")).output_action == "close"
    assert Limits(output="1M", output_action="close").merge(Limits(pids=3)).output_action == "close"


def test_merge_an_explicit_kill_over_close() -> None:
    """An exec may ask for "kill" under a sandbox set to "close"."""
    base = Limits(output="1M", output_action="close")
    got = base.merge(Limits(output_action="kill"))
    assert got.output_action == "kill" and not got.closes_output


def test_merge_keeps_memory_swap_consistent() -> None:
    got = Limits(memory="256M", memory_swap="512M").merge(Limits(pids=4))
    assert (got.memory, got.memory_swap) == (256 * M, 512 * M)


# -- rlimits -----------------------------------------------------------------------------


def test_rlimits_default_is_no_core_dump() -> None:
    assert Limits().rlimits() == [(resource.RLIMIT_CORE, 0, 0)]


@pytest.mark.parametrize(("cpu_time", "soft"), [(1, 2), (0.5, 2), (0.01, 2), (2.3, 4), (10, 11)])
def test_rlimit_cpu_is_a_backstop_a_second_above(cpu_time: float, soft: int) -> None:
    """The host ends the command at the cgroup's exact count; RLIMIT_CPU
    (whole seconds, per process) only catches what the host missed."""
    got = dict((r, (s, h)) for r, s, h in Limits(cpu_time=cpu_time).rlimits())
    assert got[resource.RLIMIT_CPU] == (soft, soft + 1)


def test_rlimits_of_every_field() -> None:
    lim = Limits(cpu_time=2, open_files=77, file_size="1M", stack="8M", memory="64M", pids=5, output="1K")
    got = {r: (s, h) for r, s, h in lim.rlimits()}
    assert got == {
        resource.RLIMIT_CORE: (0, 0),
        resource.RLIMIT_CPU: (3, 4),
        resource.RLIMIT_NOFILE: (77, 77),
        resource.RLIMIT_FSIZE: (M, M),
        resource.RLIMIT_STACK: (8 * M, 8 * M),
    }
    for _, soft, hard in lim.rlimits():
        assert type(soft) is int and type(hard) is int


# -- check_limits ------------------------------------------------------------------------


def test_check_limits_passes_none_and_limits_through() -> None:
    lim = Limits(pids=3)
    assert check_limits("limits", None) is None
    assert check_limits("limits", lim) is lim


def test_check_limits_takes_a_dict() -> None:
    got = check_limits("limits", {"memory": "64M", "pids": 8, "output_action": "close"})
    assert got == Limits(memory=64 * M, pids=8, output_action="close")


def test_check_limits_unknown_field_names_the_option_and_lists_the_fields() -> None:
    with pytest.raises(ConfigError) as e:
        check_limits("limits", {"memroy": "64M"})
    assert e.value.option == "limits"
    assert "memroy" in str(e.value)
    for f in dataclasses.fields(Limits):
        assert f.name in str(e.value)


def test_check_limits_non_string_keys() -> None:
    with pytest.raises(ConfigError) as e:
        check_limits("limits", {1: 2})
    assert e.value.option == "limits"


def test_check_limits_bad_value_in_a_dict_names_the_field() -> None:
    with pytest.raises(ConfigError) as e:
        check_limits("limits", {"memory": "lots"})
    assert e.value.option == "limits.memory"


@pytest.mark.parametrize("bad", ["256M", 5, ["memory"], ("memory", "64M"), object(), True])
def test_check_limits_bad_types(bad: object) -> None:
    with pytest.raises(ConfigError) as e:
        check_limits("limits", bad)
    assert e.value.option == "limits"
    assert "sandbox.Limits" in str(e.value)
