"""ExecResult as a value: hashable (a set of results, a dict keyed by one,
functools.cache over one), with its argv still the list exec() was given,
so that equality with a list, its repr and its JSON stay as they were."""

from __future__ import annotations

import json

from sandbox.result import ExecResult


def result(argv: list[str], out: bytes = b"out\n") -> ExecResult:
    return ExecResult(argv, 0, None, out, b"", "exited", 0.5, 0.25, 4096)


def test_a_result_is_hashable_and_equal_results_hash_alike() -> None:
    a, b = result(["sh", "-c", "echo out"]), result(["sh", "-c", "echo out"])
    assert a == b and hash(a) == hash(b)
    assert len({a, b, result(["true"])}) == 2
    assert {a: 1}[b] == 1


def test_argv_stays_a_list_in_equality_repr_and_json() -> None:
    r = result(["echo", "hi"])
    assert r.argv == ["echo", "hi"] and isinstance(r.argv, list)
    assert repr(r).startswith("ExecResult(argv=['echo', 'hi'], exit_code=0,")
    assert json.loads(r.to_json())["argv"] == ["echo", "hi"]


def test_results_differing_in_argv_only_are_unequal() -> None:
    """argv is left out of the hash, not out of equality."""
    assert result(["a"]) != result(["b"])
