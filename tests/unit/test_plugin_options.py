"""The pytest plugin's options: which markers, command-line defaults and
factory keywords make a fixture's Sandbox(...).  The file system (image=,
rootfs= or layers=) is one choice: the closest place naming one wins whole.
Nothing here makes a sandbox: the merging is pure."""

from __future__ import annotations

from typing import Any

import pytest

from sandbox import Limits
from sandbox.pytest_plugin import _marker_kwargs, _merge


class _Node:
    """What _marker_kwargs asks of a test item: its markers, closest first."""

    def __init__(self, *marks: pytest.MarkDecorator) -> None:
        self.nodeid = "test_x.py::test_x"
        self._marks = [m.mark for m in marks]

    def iter_markers(self, name: str) -> Any:
        return (m for m in self._marks if m.name == name)


def marked(*marks: pytest.MarkDecorator) -> dict[str, Any]:
    return _marker_kwargs(_Node(*marks))  # type: ignore[arg-type]


DEFAULTS = {"image": "debian"}


def test_a_marker_rootfs_replaces_the_default_image() -> None:
    assert _merge(DEFAULTS, marked(pytest.mark.sandbox(rootfs="/r"))) == {"rootfs": "/r"}
    assert _merge(DEFAULTS, marked(pytest.mark.sandbox(layers=["/a", "/b"]))) == {"layers": ["/a", "/b"]}


def test_a_factory_image_replaces_the_markers_rootfs() -> None:
    """sandbox_factory(image="alpine") in a module marked rootfs=...: the
    image the test asked for, not the module's rootfs (it was dropped)."""
    made = _merge(DEFAULTS, marked(pytest.mark.sandbox(rootfs="/r", hostname="h")))
    assert _merge(made, {"image": "alpine"}) == {"image": "alpine", "hostname": "h"}
    assert _merge(made, {"layers": ["/l"]}) == {"layers": ["/l"], "hostname": "h"}
    assert _merge(made, {"hostname": "other"}) == {"rootfs": "/r", "hostname": "other"}


def test_the_closest_markers_image_beats_a_farther_rootfs() -> None:
    """A test's @pytest.mark.sandbox(image=...) under a module's
    rootfs=...: the test's image (the module's rootfs won)."""
    test, module = pytest.mark.sandbox(image="python"), pytest.mark.sandbox(rootfs="/r", network="bridge")
    assert _merge(DEFAULTS, marked(test, module)) == {"image": "python", "network": "bridge"}
    assert _merge(DEFAULTS, marked(pytest.mark.sandbox("python"), module)) == {
        "image": "python",
        "network": "bridge",
    }
    assert _merge(DEFAULTS, marked(module, test)) == {"rootfs": "/r", "network": "bridge"}


def test_a_marker_without_a_tree_keeps_the_farther_one() -> None:
    test, module = pytest.mark.sandbox(hostname="t"), pytest.mark.sandbox(rootfs="/r", hostname="m")
    assert _merge(DEFAULTS, marked(test, module)) == {"rootfs": "/r", "hostname": "t"}


def test_one_place_naming_two_trees_is_left_for_sandbox_to_refuse() -> None:
    """Not one of them dropped in silence: Sandbox(...) refuses both."""
    assert _merge(DEFAULTS, {"image": "x", "rootfs": "/r"}) == {"image": "x", "rootfs": "/r"}


# limits= merges field by field at every layer (command line and ini,
# module/class/function markers, a factory call), whether or not a
# --sandbox-* flag was given.  Found in review: without a flag a factory
# call's limits replaced the marker's whole, with one they were merged; a
# class marker's limits were dropped under a test's.


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
    got = marked(
        pytest.mark.sandbox(limits=Limits(pids=8)),  # the test's
        pytest.mark.sandbox(limits=Limits(memory="64M", pids=64), hostname="h"),  # its class's
    )
    assert got["limits"] == {"memory": 64 << 20, "pids": 8}
    assert got["hostname"] == "h"
