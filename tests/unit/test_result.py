"""ExecResult as a value: hashable (a set of results, a dict keyed by one,
functools.cache over one), with its argv still the list exec() was given,
so that equality with a list, its repr and its JSON stay as they were."""

from __future__ import annotations

import base64
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


def test_json_keeps_undecodable_output_exact() -> None:
    """Found in review: undecodable bytes were replaced in the JSON, silently."""
    raw = b"ok \xff\xfe end"
    d = json.loads(result(["cat"], out=raw).to_json())
    assert d["stdout"] == "ok \ufffd\ufffd end"
    assert base64.b64decode(d["stdout_base64"]) == raw
    assert "stderr_base64" not in d  # valid UTF-8 (empty): the text is exact


def test_json_of_valid_utf8_has_no_base64() -> None:
    d = json.loads(result(["echo"], out="héllo\n".encode()).to_json())
    assert d["stdout"] == "héllo\n" and "stdout_base64" not in d
