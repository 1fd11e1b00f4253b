"""The child side of the launcher (sandbox/_cext/launch_unsafe.c) runs
between clone(CLONE_VM) and execve inside the interpreter's memory: it may
make raw system calls only.  No malloc, no stdio, no memset/memcpy, no libc
wrapper such as setresuid (glibc's would signal every Python thread).

Two checks: the source text of every function clone() or sbx_clone_raw()
starts, and what it calls, may call nothing but RAW(...)/raw6(...),
sbx_clone_raw and each other; and in the built extension those functions
contain no call instruction into anything else (the compiler may turn a loop
or a struct copy into memset/memcpy).  sbx_clone_raw is assembly in the same
file: one clone system call, then the entry it is given."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

import sandbox
from tests.conftest import have, require

SRC = Path(__file__).resolve().parents[2] / "sandbox" / "_cext" / "launch_unsafe.c"
# compiler builtins for memory ordering compile to plain instructions
ALLOWED = {"RAW", "raw6", "__atomic_load_n", "__atomic_store_n"}
# the raw clone, written in assembly in the file: its one indirect call is
# to the entry it is passed, which is checked as a clone entry itself
RAW_ASM = {"sbx_clone_raw"}
NOT_CALLS = {
    "if",
    "for",
    "while",
    "switch",
    "return",
    "sizeof",
    "__asm__",
    "asm",
    "__volatile__",
    "volatile",
    "_Alignof",
    "alignof",
    "defined",
}


def _strip(text: str) -> str:
    """The source without comments, string and char literals (kept as "")."""
    out = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    out = re.sub(r"//[^\n]*", " ", out)
    out = re.sub(r'"(\\.|[^"\\\n])*"', '""', out)
    return re.sub(r"'(\\.|[^'\\\n])+'", "0", out)


def _functions(text: str) -> dict[str, str]:
    """name -> body of every function defined in the file (all definitions
    of a name, e.g. per-architecture variants, concatenated)."""
    out: dict[str, str] = {}
    head = re.compile(r"^[A-Za-z_][\w \t\*]*?\b([A-Za-z_]\w*)\s*\(([^;{}()]|\([^()]*\))*\)\s*\{", re.M)
    for m in head.finditer(text):
        name = m.group(1)
        depth, i = 1, m.end()
        while depth:
            c = text[i]
            depth += c == "{"
            depth -= c == "}"
            i += 1
        out[name] = out.get(name, "") + text[m.end() : i - 1]
    return out


def _calls(body: str) -> set[str]:
    return {n for n in re.findall(r"\b([A-Za-z_]\w*)\s*\(", body) if n not in NOT_CALLS}


@pytest.fixture(scope="module")
def source() -> str:
    # raw6 lives in sys6.h, shared with the init
    return _strip(SRC.read_text() + "\n" + (SRC.parent / "sys6.h").read_text())


def _clone_entries(text: str) -> set[str]:
    return set(re.findall(r"\b(?:clone|sbx_clone_raw)\s*\(\s*([A-Za-z_]\w*)\s*,", text))


def test_the_parser_sees_the_child_section(source: str) -> None:
    funcs = _functions(source)
    assert {"child_main", "child_report", "raw6", "sbx_launch", "helper_main", "template_main"} <= set(funcs)
    assert {"child_main", "helper_main", "template_main"} <= _clone_entries(source)
    assert "sbx_clone_raw" in _calls(funcs["helper_main"])
    assert "RAW" in _calls(funcs["child_main"])
    # The check below does catch a libc call: the parent side has plenty.
    assert {"open", "close", "snprintf"} & _calls(funcs["write_map"])


def test_raw_is_raw6_only(source: str) -> None:
    m = re.search(r"#define\s+RAW\(([^)]*)\)\s+(.*)", source)
    assert m, "no RAW macro"
    assert _calls(m.group(2)) == {"raw6"}


def _reachable(source: str) -> dict[str, set[str]]:
    funcs = _functions(source)
    todo = sorted(_clone_entries(source))
    seen: dict[str, set[str]] = {}
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        calls = _calls(funcs[name])
        seen[name] = calls
        todo += [c for c in calls if c in funcs and c not in seen]
    return seen


def test_child_section_calls_no_libc(source: str) -> None:
    reach = _reachable(source)
    assert {"child_main", "child_report", "raw6"} <= set(reach)
    bad = {
        f"{fn} calls {c}()"
        for fn, calls in reach.items()
        for c in calls
        if c not in ALLOWED and c not in RAW_ASM and c not in reach
    }
    assert not bad, (
        "the child side of the launcher calls functions other than raw system calls: "
        + ", ".join(sorted(bad))
    )


def test_child_section_has_no_implicit_copies(source: str) -> None:
    """Aggregate initialisers and struct assignments may compile to memset
    or memcpy calls: the child zeroes with a volatile loop instead."""
    funcs = _functions(source)
    for fn in _reachable(source):
        body = funcs[fn]
        assert not re.search(r"=\s*\{", body), f"{fn}: an aggregate initialiser"
        assert "__builtin_" not in body, f"{fn}: a builtin (may be a libc call)"


def _objdump(so: Path, fn: str) -> str:
    return subprocess.run(
        ["objdump", "-d", "--no-show-raw-insn", f"--disassemble={fn}", str(so)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_built_child_functions_make_no_calls(source: str) -> None:
    require(have("objdump") and have("nm"), "no binutils (objdump, nm) to inspect the built extension")
    pkg = Path(sandbox.__file__).parent
    sos = sorted(pkg.glob("_sandbox_cext*.so"))
    require(sos, "the compiled extension is not in the package directory")
    so = sos[0]
    syms = subprocess.run(["nm", str(so)], capture_output=True, text=True, check=True).stdout
    local = {line.split()[-1] for line in syms.splitlines() if re.search(r" [tT] ", line)}
    require("child_main" in local, f"{so.name} has no symbol table for child_main (stripped build)")
    checked: set[str] = set()
    todo = [f for f in _clone_entries(source) if f in local]
    while todo:
        fn = todo.pop()
        if fn in checked:
            continue
        checked.add(fn)
        asm = _objdump(so, fn)
        assert f"<{fn}>:" in asm, fn
        for line in asm.splitlines():
            m = re.search(r"\s(call|callq|bl|blr|jmp|b)\s+(\S+)(?:\s+<([^>]+)>)?", line)
            if not m:
                continue
            op, _target, label = m.groups()
            if op in ("blr",) or (op == "call" and label is None):
                pytest.fail(f"{fn}: an indirect call in the child: {line.strip()}")
            if label is None:
                continue
            base = label.split("+")[0]
            if base == fn:
                continue  # a jump inside the function
            if base in RAW_ASM and base in local:
                continue
            if op in ("jmp", "b") and "+" in label and base in checked:
                continue
            assert "@plt" not in label, f"{fn} calls {label} (a libc function) in the child: {line.strip()}"
            assert base in local and base in _reachable(source), f"{fn} calls {label}: {line.strip()}"
            todo.append(base)
    assert "child_main" in checked
