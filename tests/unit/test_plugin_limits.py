"""The pytest plugin's `limits=`: merged field by field at every layer
(command line and ini, module/class/function markers, a factory call),
whether or not a --sandbox-* flag was given.  Found in review: without a
flag a factory call's limits replaced the marker's whole, with one they
were merged; a class marker's limits were dropped under a test's."""

from __future__ import annotations

from typing import Any

import pytest

from sandbox import Limits
from sandbox.pytest_plugin import _marker_kwargs, _merge


class Node:
    """What _marker_kwargs reads of a test item: its markers, closest first."""

    def __init__(self, *marks: pytest.MarkDecorator) -> None:
        self.marks = [m.mark for m in marks]

    def iter_markers(self, name: str) -> list[Any]:
        return [m for m in self.marks if m.name == name]


def test_a_factory_call_keeps_the_markers_other_limits_without_a_flag() -> None:
    marker = {"image": "debian", "limits": Limits(memory="64M", pids=32)}
    got = _merge({"image": "debian"}, marker, {"limits": Limits(pids=8)})
    assert got["limits"] == {"memory": 64 << 20, "pids": 8}


def test_the_same_with_a_flag() -> None:
    flags = {"image": "debian", "limits": {"timeout": 5.0}}
    marker = {"limits": Limits(memory="64M", pids=32)}
    got = _merge(flags, marker, {"limits": Limits(pids=8)})
    assert got["limits"] == {"timeout": 5.0, "memory": 64 << 20, "pids": 8}


def test_limits_none_drops_what_came_before() -> None:
    got = _merge({"limits": {"timeout": 5.0}}, {"limits": Limits(pids=8)}, {"limits": None})
    assert got["limits"] is None


def test_a_farther_markers_limits_fill_in_the_closer_ones() -> None:
    node = Node(
        pytest.mark.sandbox(limits=Limits(pids=8)),  # the test's
        pytest.mark.sandbox(limits=Limits(memory="64M", pids=64), hostname="h"),  # its class's
    )
    got = _marker_kwargs(node)  # type: ignore[arg-type]
    assert got["limits"] == {"memory": 64 << 20, "pids": 8}
    assert got["hostname"] == "h"
