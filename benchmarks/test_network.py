"""Network modes side by side, in one run: the full cycle (start, exec
/bin/true, stop) with network="none" and in bridge mode.

- bridge: the default network already exists (another sandbox holds it, as
  in any busy host): a veth, a lease, the namespace's address and route.
- bridge+rules: the same with a published port and an egress list, which
  rewrite our nftables sets at start and stop.
- bridge, new network: the sandbox is its network's only one, so the
  bridge, its rules and ip_forward come and go with it.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from sandbox import Network, Sandbox

ROUNDS = 100
WARMUP = 5
TRUE = ["/bin/true"]
GROUP = "network: full cycle, back-to-back"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _measure(
    benchmark: BenchmarkFixture,
    fn: Callable[[], object],
    runner: str,
    group: str = GROUP,
    setup: Callable[[], None] | None = None,
) -> None:
    benchmark.group = group
    benchmark.extra_info.update(runner=runner, mode="back-to-back")
    benchmark.pedantic(fn, setup=setup, rounds=ROUNDS, warmup_rounds=WARMUP, iterations=1)


def _cycle(rootfs: str, **kw: object) -> Callable[[], None]:
    def cycle() -> None:
        with Sandbox(rootfs=rootfs, **kw) as sb:  # type: ignore[arg-type]
            r = sb.exec(TRUE)
        assert r.exit_code == 0, r

    return cycle


@pytest.fixture
def keeper(rootfs: str) -> object:
    """A sandbox that holds the default network while the rounds run."""
    with Sandbox(rootfs=rootfs, network="bridge") as sb:
        yield sb


def test_network_none(benchmark: BenchmarkFixture, rootfs: str) -> None:
    _measure(benchmark, _cycle(rootfs), "none")


def test_network_bridge(benchmark: BenchmarkFixture, rootfs: str, keeper: object) -> None:
    _measure(benchmark, _cycle(rootfs, network="bridge"), "bridge")


def test_network_bridge_rules(benchmark: BenchmarkFixture, rootfs: str, keeper: object) -> None:
    cycle = _cycle(rootfs, network="bridge", publish={_free_port(): 80}, egress=["10.231.0.0/16"])
    _measure(benchmark, cycle, "bridge+rules")


def test_network_bridge_new_network(benchmark: BenchmarkFixture, rootfs: str) -> None:
    _measure(benchmark, _cycle(rootfs, network=Network("bench-new")), "bridge, new network")


@pytest.mark.parametrize("mode", ["none", "bridge"])
def test_network_start_only(benchmark: BenchmarkFixture, rootfs: str, keeper: object, mode: str) -> None:
    """start() alone: each round's sandbox is closed in the next round's
    (untimed) setup."""
    running: list[Sandbox] = []

    def close_previous() -> None:
        while running:
            running.pop().close()

    def start() -> None:
        running.append(Sandbox(rootfs=rootfs, network=mode).start())

    try:
        _measure(benchmark, start, mode, "network: start only, back-to-back", close_previous)
    finally:
        close_previous()
