"""Seccomp profiles: Docker's JSON format in, a classic BPF program out.

    prog = compile_profile("default")            # policies/default.json
    prog = compile_profile("judge")              # policies/judge.json
    prog = compile_profile("/etc/x/profile.json", cap_add=("CAP_SYS_PTRACE",))
    prog = compile_profile({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [...]})
    prog = compile_profile(None)                 # None: no filter

The result is the raw array of ``struct sock_filter`` (8 bytes each: u16
code, u8 jt, u8 jf, u32 k), what ``seccomp(SECCOMP_SET_MODE_FILTER, 0,
&(struct sock_fprog){len(prog) // 8, prog})`` takes.  libseccomp (through
the ``pyseccomp`` ctypes bindings) compiles it for the native architecture
only: a system call made through any other ABI (i386 ``int 0x80``, x32)
kills the process.  Binary-tree dispatch is on (SCMP_FLTATR_CTL_OPTIMIZE=2);
libseccomp sets neither no_new_privs nor TSYNC: the loader does its own.

The format (what Docker and runc read):

- ``defaultAction`` (required), ``defaultErrnoRet``;
- ``architectures`` / ``archMap``: checked, then ignored (native only);
- ``flags``: checked, then ignored (the loader picks the seccomp() flags);
- ``syscalls``: a list of ``{names | name, action, errnoRet, args,
  includes, excludes, comment}``; ``args`` items are ``{index, value,
  valueTwo, op}`` with op one of SCMP_CMP_NE/LT/LE/EQ/GE/GT/MASKED_EQ (for
  MASKED_EQ ``value`` is the mask and ``valueTwo`` the datum).  As in runc,
  conditions on distinct arguments must all hold (one rule), and an entry
  that tests one argument more than once becomes one rule per condition
  (any may hold);
- ``includes`` / ``excludes``: ``{caps, arches, minKernel}``, evaluated
  against ``cap_add``, the native architecture and the running kernel
  (include: every listed cap present; exclude: any listed cap present);
- actions SCMP_ACT_ALLOW, ERRNO, KILL (= KILL_THREAD), KILL_THREAD,
  KILL_PROCESS, TRAP, TRACE, LOG; ``errnoRet`` (default EPERM) goes with
  ERRNO and TRACE only.  SCMP_ACT_NOTIFY is refused (no listener runs).

A system call name libseccomp does not know is skipped, as Docker does,
except the few newer ones listed in ``_LATE_SYSCALLS`` (added to Linux
after the libseccomp release we build against), which are placed by number.
A rule whose action equals the default one is dropped (libseccomp refuses
it; runc drops it too).  Two things libseccomp would silently get wrong
are errors here: two unconditional rules for one syscall with different
actions, and an unconditional rule beside conditional ones with another
action (libseccomp keeps only the unconditional one, so a "deny when the
argument is X" next to "allow" allows X).  An unknown field, a bad type, a
bad value: ``ConfigError`` naming the JSON path, e.g.
``seccomp: syscalls[3].args[0].op: unknown operator 'SCMP_CMP_FOO' ...``.

``log=True`` is for writing profiles: a denying default action becomes
SCMP_ACT_LOG, so whatever the profile does not allow still runs and the
kernel logs it (audit type 1326 / "audit: ... syscall=N" in the kernel log;
``syscall_name(N)`` turns the number into a name).  Explicit rules keep
their actions: the deny lists of our profiles stay in force.  (Loading with
SECCOMP_FILTER_FLAG_LOG also makes the kernel log those ERRNO answers.)

The 64-bit rule: the filter sees the full 64-bit register, the kernel often
reads only the low 32 bits (``int family``, ``unsigned int cmd``...).  A
NE/GT/GE test on such an argument is bypassed by setting the upper half
(Docker's ``socket`` rule ``family != AF_VSOCK`` lets ``AF_VSOCK | 1<<32``
through).  Our profiles compare 32-bit arguments only with MASKED_EQ and a
mask within 0xffffffff (exact for the kernel's view), EQ or LT in allow
rules (they fail closed); tests/unit/test_seccomp.py checks it.

Compiled programs are cached in memory and under
``$SANDBOX_HOME/cache/seccomp/`` (SANDBOX_HOME defaults to /var/lib/sandbox),
keyed by the SHA-256 of the profile's canonical JSON, the libseccomp
version, the native architecture, the kernel version (for minKernel),
``log``, ``cap_add`` and this module's translation version.  Disk writes
are atomic (a temporary file in the same directory, then rename); a cache
file that is not a plausible program (length, first and last instruction),
or is not owned by us, or sits in a directory others can write, is not
used.  A cache directory that cannot be written leaves the memory cache.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import hashlib
import importlib
import json
import os
import platform
import re
import stat
import struct
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError, HostError, os_error_text

__all__ = [
    "BUILTIN",
    "ProfileError",
    "cache_dir",
    "clear_memory_cache",
    "compile_profile",
    "libseccomp_version",
    "pfc",
    "profile_path",
    "syscall_name",
    "syscall_number",
]

OPTION = "seccomp"
BUILTIN = ("default", "judge")
FORMAT = 1  # bump when the translation changes: cached programs then miss
BPF_MAXINSNS = 4096
MAX_PROFILE_BYTES = 1 << 20

# Kernel ABI values (libseccomp's SCMP_ACT_* are the same numbers).
ACT_KILL_PROCESS = 0x80000000
ACT_KILL_THREAD = 0x00000000
ACT_TRAP = 0x00030000
ACT_ERRNO = 0x00050000
ACT_TRACE = 0x7FF00000
ACT_LOG = 0x7FFC0000
ACT_ALLOW = 0x7FFF0000

_ACTIONS = {
    "SCMP_ACT_KILL": ACT_KILL_THREAD,
    "SCMP_ACT_KILL_THREAD": ACT_KILL_THREAD,
    "SCMP_ACT_KILL_PROCESS": ACT_KILL_PROCESS,
    "SCMP_ACT_TRAP": ACT_TRAP,
    "SCMP_ACT_ERRNO": ACT_ERRNO,
    "SCMP_ACT_TRACE": ACT_TRACE,
    "SCMP_ACT_ALLOW": ACT_ALLOW,
    "SCMP_ACT_LOG": ACT_LOG,
}
_WITH_RET = {"SCMP_ACT_ERRNO", "SCMP_ACT_TRACE"}
_UNSUPPORTED_ACTIONS = {
    "SCMP_ACT_NOTIFY": "user notification needs a listener process, which the sandbox does not run",
}

# enum scmp_compare
OPS = {
    "SCMP_CMP_NE": 1,
    "SCMP_CMP_LT": 2,
    "SCMP_CMP_LE": 3,
    "SCMP_CMP_EQ": 4,
    "SCMP_CMP_GE": 5,
    "SCMP_CMP_GT": 6,
    "SCMP_CMP_MASKED_EQ": 7,
}

# enum scmp_filter_attr
_ATTR_ACT_BADARCH = 2
_ATTR_CTL_NNP = 3
_ATTR_CTL_TSYNC = 4
_ATTR_CTL_OPTIMIZE = 8

_ARCH_NAMES = frozenset(
    "SCMP_ARCH_" + a
    for a in (
        *("NATIVE", "X86", "X86_64", "X32", "ARM", "AARCH64", "LOONGARCH64", "M68K"),
        *("MIPS", "MIPS64", "MIPS64N32", "MIPSEL", "MIPSEL64", "MIPSEL64N32"),
        *("PPC", "PPC64", "PPC64LE", "S390", "S390X", "PARISC", "PARISC64", "RISCV64", "SH", "SHEB"),
    )
)
_FLAGS = frozenset(
    {
        "SECCOMP_FILTER_FLAG_TSYNC",
        "SECCOMP_FILTER_FLAG_LOG",
        "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
        "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
    }
)

# AUDIT_ARCH_* of the native ABI -> the names includes/excludes "arches" may use
# (Docker matches Go's GOARCH names; the libseccomp and uname spellings work too).
_NATIVE_ALIASES = {
    0xC000003E: ("amd64", "x86_64", "SCMP_ARCH_X86_64"),
    0xC00000B7: ("arm64", "aarch64", "SCMP_ARCH_AARCH64"),
    0x40000003: ("386", "x86", "i386", "SCMP_ARCH_X86"),
    0x40000028: ("arm", "SCMP_ARCH_ARM"),
    0xC0000015: ("ppc64le", "SCMP_ARCH_PPC64LE"),
    0x80000016: ("s390x", "SCMP_ARCH_S390X"),
    0xC00000F3: ("riscv64", "SCMP_ARCH_RISCV64"),
}

# System calls newer than the libseccomp we build against (2.5.4 knows up to
# futex_requeue, 456).  Since 5.1 new syscalls get one number on every
# architecture that uses the common table (x86_64 and arm64 among them), so
# these are placed by number on those two.  libseccomp's own table wins when
# it knows the name.
_LATE_SYSCALLS = {
    "statmount": 457,
    "listmount": 458,
    "lsm_get_self_attr": 459,
    "lsm_set_self_attr": 460,
    "lsm_list_modules": 461,
    "mseal": 462,
    "setxattrat": 463,
    "getxattrat": 464,
    "listxattrat": 465,
    "removexattrat": 466,
    "open_tree_attr": 467,
    "file_getattr": 468,
    "file_setattr": 469,
}
_LATE_ARCHES = (0xC000003E, 0xC00000B7)

_TOP_FIELDS = (
    "defaultAction",
    "defaultErrnoRet",
    "architectures",
    "archMap",
    "syscalls",
    "flags",
    "comment",
)
_UNSUPPORTED_FIELDS = {
    "listenerPath": "user notification needs a listener process, which the sandbox does not run",
    "listenerMetadata": "user notification needs a listener process, which the sandbox does not run",
}
_RULE_FIELDS = ("names", "name", "action", "errnoRet", "args", "includes", "excludes", "comment")
_ARG_FIELDS = ("index", "value", "valueTwo", "op")
_FILTER_FIELDS = ("caps", "arches", "minKernel")
_U64 = (1 << 64) - 1


class ProfileError(ConfigError):
    """A seccomp profile is not valid.  `json_path` names the element at
    fault ("" for the whole document) and `source` the file, if any."""

    def __init__(self, json_path: str, message: str, source: str | None = None) -> None:
        text = f"{json_path}: {message}" if json_path else message
        if source:
            text += f" (profile {source})"
        super().__init__(OPTION, text)
        self.json_path = json_path
        self.source = source


# -- libseccomp ---------------------------------------------------------------------


class _Lib:
    """pyseccomp's filter object, plus the few C calls it does not wrap."""

    def __init__(self) -> None:
        try:
            self.mod: Any = importlib.import_module("pyseccomp")
        except ImportError as e:
            try:
                self.mod = importlib.import_module("seccomp")  # libseccomp's own binding
            except ImportError:
                raise HostError(
                    f"seccomp: cannot load the libseccomp bindings ({e}): "
                    "pip install pyseccomp, and apt-get install libseccomp2"
                ) from e
        except (RuntimeError, OSError) as e:  # pyseccomp raises RuntimeError without the .so
            raise HostError(f"seccomp: libseccomp is missing ({e}): apt-get install libseccomp2") from e
        name = ctypes.util.find_library("seccomp")
        if not name:
            raise HostError("seccomp: libseccomp is missing: apt-get install libseccomp2")
        c = ctypes.CDLL(name)
        c.seccomp_syscall_resolve_name.argtypes = (ctypes.c_char_p,)
        c.seccomp_syscall_resolve_name.restype = ctypes.c_int
        c.seccomp_syscall_resolve_num_arch.argtypes = (ctypes.c_uint32, ctypes.c_int)
        c.seccomp_syscall_resolve_num_arch.restype = ctypes.c_void_p
        c.seccomp_arch_native.argtypes = ()
        c.seccomp_arch_native.restype = ctypes.c_uint32

        class _Version(ctypes.Structure):
            _fields_ = (("major", ctypes.c_uint), ("minor", ctypes.c_uint), ("micro", ctypes.c_uint))

        c.seccomp_version.argtypes = ()
        c.seccomp_version.restype = ctypes.POINTER(_Version)
        v = c.seccomp_version().contents
        self.version = f"{v.major}.{v.minor}.{v.micro}"
        self.c = c
        self.native = int(c.seccomp_arch_native())
        libc = ctypes.CDLL(None)
        libc.free.argtypes = (ctypes.c_void_p,)
        libc.free.restype = None
        self.free = libc.free

    def resolve(self, name: str) -> int:
        """The native number of a syscall; negative: not on this architecture
        (libseccomp's pseudo numbers; a rule for one is a no-op) or unknown (-1)."""
        nr = int(self.c.seccomp_syscall_resolve_name(name.encode()))
        if nr == -1 and self.native in _LATE_ARCHES:
            return _LATE_SYSCALLS.get(name, -1)
        return nr

    def name(self, nr: int) -> str | None:
        p = self.c.seccomp_syscall_resolve_num_arch(0, nr)
        if p:
            try:
                return ctypes.string_at(p).decode()
            finally:
                self.free(p)
        if self.native in _LATE_ARCHES:
            for k, v in _LATE_SYSCALLS.items():
                if v == nr:
                    return k
        return None


_lib_cache: list[_Lib] = []
_lib_lock = threading.Lock()


def _lib() -> _Lib:
    if not _lib_cache:
        with _lib_lock:
            if not _lib_cache:
                _lib_cache.append(_Lib())
    return _lib_cache[0]


def libseccomp_version() -> str:
    """'2.5.4': the version of the libseccomp that compiles the filters."""
    return _lib().version


def syscall_number(name: str) -> int | None:
    """The native number of a system call, None where this machine has none."""
    nr = _lib().resolve(name)
    return nr if nr >= 0 else None


def syscall_name(nr: int) -> str:
    """The name of native system call `nr` ('openat'), or 'syscall N'."""
    return _lib().name(nr) or f"syscall {nr}"


# -- parsing and validation ---------------------------------------------------------


@dataclass(frozen=True)
class _Cond:
    index: int
    op: int
    a: int
    b: int


@dataclass(frozen=True)
class _Rule:
    path: str
    names: tuple[tuple[str, str], ...]  # (name, its JSON path)
    action: int
    conds: tuple[_Cond, ...]
    applies: bool


@dataclass(frozen=True)
class _Profile:
    default: int
    rules: tuple[_Rule, ...]


class _Checker:
    def __init__(self, source: str | None, caps: frozenset[str], native: int) -> None:
        self.source = source
        self.caps = caps
        self.arches = frozenset(_NATIVE_ALIASES.get(native, (platform.machine(),)))
        self.kernel = _kernel_version()

    def fail(self, path: str, message: str) -> ProfileError:
        return ProfileError(path, message, self.source)

    def obj(self, v: object, path: str, fields: Iterable[str]) -> dict[str, object]:
        if not isinstance(v, dict):
            raise self.fail(path, f"expected an object, got {_kind(v)}")
        known = tuple(fields)
        for k in v:
            if k not in known:
                where = f"{path}.{k}" if path else str(k)
                raise self.fail(where, f"unknown field (expected one of: {', '.join(known)})")
        return v

    def as_list(self, v: object, path: str) -> list[object]:
        if not isinstance(v, list):
            raise self.fail(path, f"expected a list, got {_kind(v)}")
        return v

    def as_str(self, v: object, path: str) -> str:
        if not isinstance(v, str):
            raise self.fail(path, f"expected a string, got {_kind(v)}")
        return v

    def as_int(self, v: object, path: str, lo: int, hi: int) -> int:
        if not isinstance(v, int) or isinstance(v, bool):
            raise self.fail(path, f"expected an integer, got {_kind(v)}")
        if not lo <= v <= hi:
            raise self.fail(path, f"{v} is out of range ({lo}..{hi})")
        return v

    def strings(self, v: object, path: str) -> list[str]:
        return [self.as_str(x, f"{path}[{i}]") for i, x in enumerate(self.as_list(v, path))]

    def action(self, v: object, path: str, ret: object, ret_path: str) -> int:
        name = self.as_str(v, path)
        if name in _UNSUPPORTED_ACTIONS:
            raise self.fail(path, f"{name} is not supported: {_UNSUPPORTED_ACTIONS[name]}")
        if name not in _ACTIONS:
            raise self.fail(path, f"unknown action {name!r} (expected one of {', '.join(_ACTIONS)})")
        if ret is not None and name not in _WITH_RET:
            raise self.fail(ret_path, f"goes only with SCMP_ACT_ERRNO or SCMP_ACT_TRACE, not {name}")
        value = _ACTIONS[name]
        if name in _WITH_RET:
            value |= errno.EPERM if ret is None else self.as_int(ret, ret_path, 0, 4095)
        return value

    def arch(self, v: object, path: str) -> str:
        name = self.as_str(v, path)
        if name not in _ARCH_NAMES:
            raise self.fail(path, f"unknown architecture {name!r} (names are like SCMP_ARCH_X86_64)")
        return name

    def filter(self, v: object, path: str) -> tuple[list[str], list[str], tuple[int, int] | None]:
        f = self.obj(v, path, _FILTER_FIELDS)
        caps = [_cap_name(c) for c in self.strings(f.get("caps", []), f"{path}.caps")]
        arches = self.strings(f.get("arches", []), f"{path}.arches")
        mk = None
        if "minKernel" in f:
            text = self.as_str(f["minKernel"], f"{path}.minKernel")
            m = re.fullmatch(r"(\d{1,4})\.(\d{1,4})", text)
            if not m:
                raise self.fail(f"{path}.minKernel", f"{text!r} is not a kernel version like '5.8'")
            mk = (int(m[1]), int(m[2]))
        return caps, arches, mk

    def applies(self, rule: dict[str, object], path: str) -> bool:
        ok = True
        if "excludes" in rule:
            caps, arches, mk = self.filter(rule["excludes"], f"{path}.excludes")
            if (
                self.arches.intersection(arches)
                or self.caps.intersection(caps)
                or (mk is not None and self.kernel >= mk)
            ):
                ok = False
        if "includes" in rule:
            caps, arches, mk = self.filter(rule["includes"], f"{path}.includes")
            if (
                (arches and not self.arches.intersection(arches))
                or not self.caps.issuperset(caps)
                or (mk is not None and self.kernel < mk)
            ):
                ok = False
        return ok

    def cond(self, v: object, path: str) -> _Cond:
        a = self.obj(v, path, _ARG_FIELDS)
        if "index" not in a:
            raise self.fail(path, "missing field 'index' (the argument number, 0..5)")
        if "op" not in a:
            raise self.fail(path, f"missing field 'op' (one of {', '.join(OPS)})")
        index = self.as_int(a["index"], f"{path}.index", 0, 5)
        op_name = self.as_str(a["op"], f"{path}.op")
        if op_name not in OPS:
            raise self.fail(f"{path}.op", f"unknown operator {op_name!r} (expected one of {', '.join(OPS)})")
        value = self.as_int(a.get("value", 0), f"{path}.value", 0, _U64)
        two = self.as_int(a.get("valueTwo", 0), f"{path}.valueTwo", 0, _U64)
        return _Cond(index, OPS[op_name], value, two)

    def rule(self, v: object, path: str) -> _Rule:
        r = self.obj(v, path, _RULE_FIELDS)
        if "names" in r and "name" in r:
            raise self.fail(path, "give either 'names' or 'name', not both")
        if "names" in r:
            names = self.strings(r["names"], f"{path}.names")
            paths = [f"{path}.names[{i}]" for i in range(len(names))]
            if not names:
                raise self.fail(f"{path}.names", "is empty")
        elif "name" in r:
            names, paths = [self.as_str(r["name"], f"{path}.name")], [f"{path}.name"]
        else:
            raise self.fail(path, "missing field 'names' (the system calls this rule is for)")
        for n, p in zip(names, paths, strict=True):
            if not re.fullmatch(r"[a-z_][a-z0-9_]{0,63}", n):
                raise self.fail(p, f"{n!r} is not a system call name")
        if "action" not in r:
            raise self.fail(path, f"missing field 'action' (one of {', '.join(_ACTIONS)})")
        action = self.action(r["action"], f"{path}.action", r.get("errnoRet"), f"{path}.errnoRet")
        conds = tuple(
            self.cond(a, f"{path}.args[{i}]")
            for i, a in enumerate(self.as_list(r.get("args", []), f"{path}.args"))
        )
        if r.get("comment") is not None:
            self.as_str(r["comment"], f"{path}.comment")
        applies = self.applies(r, path)
        return _Rule(path, tuple(zip(names, paths, strict=True)), action, conds, applies)

    def profile(self, doc: object) -> _Profile:
        top = self.obj(doc, "", (*_TOP_FIELDS, *_UNSUPPORTED_FIELDS))
        for k, why in _UNSUPPORTED_FIELDS.items():
            if top.get(k) not in (None, "", {}):
                raise self.fail(k, f"not supported: {why}")
        if "defaultAction" not in top:
            raise self.fail("", "missing field 'defaultAction' (e.g. \"SCMP_ACT_ERRNO\")")
        default = self.action(
            top["defaultAction"], "defaultAction", top.get("defaultErrnoRet"), "defaultErrnoRet"
        )
        for i, a in enumerate(self.as_list(top.get("architectures", []), "architectures")):
            self.arch(a, f"architectures[{i}]")
        for i, m in enumerate(self.as_list(top.get("archMap", []), "archMap")):
            p = f"archMap[{i}]"
            e = self.obj(m, p, ("architecture", "subArchitectures"))
            if "architecture" not in e:
                raise self.fail(p, "missing field 'architecture'")
            self.arch(e["architecture"], f"{p}.architecture")
            subs = e.get("subArchitectures")
            for j, s in enumerate([] if subs is None else self.as_list(subs, f"{p}.subArchitectures")):
                self.arch(s, f"{p}.subArchitectures[{j}]")
        for i, f in enumerate(self.strings(top.get("flags", []), "flags")):
            if f not in _FLAGS:
                raise self.fail(
                    f"flags[{i}]", f"unknown flag {f!r} (expected one of {', '.join(sorted(_FLAGS))})"
                )
        if top.get("comment") is not None:
            self.as_str(top["comment"], "comment")
        rules = tuple(
            self.rule(r, f"syscalls[{i}]")
            for i, r in enumerate(self.as_list(top.get("syscalls", []), "syscalls"))
        )
        return _Profile(default, rules)


def _kind(v: object) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return f"the boolean {json.dumps(v)}"
    if isinstance(v, (int, float)):
        return f"the number {v!r}"
    if isinstance(v, str):
        return f"the string {v[:40]!r}"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, dict):
        return "an object"
    return type(v).__name__


def _kernel_version() -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", platform.release())
    return (int(m[1]), int(m[2])) if m else (0, 0)


def _cap_name(name: str) -> str:
    up = name.strip().upper()
    return up if up.startswith("CAP_") else "CAP_" + up


def _norm_caps(cap_add: object) -> tuple[str, ...]:
    if isinstance(cap_add, (str, bytes)) or not isinstance(cap_add, Iterable):
        raise ConfigError("cap_add", f"expected a list of capability names, got {cap_add!r}")
    out = set()
    for c in cap_add:
        if not isinstance(c, str) or not c.strip():
            raise ConfigError("cap_add", f"expected capability names like 'CAP_SYS_PTRACE', got {c!r}")
        out.add(_cap_name(c))
    return tuple(sorted(out))


# -- compilation ---------------------------------------------------------------------


class _Fd:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    def fileno(self) -> int:
        return self.fd


def _export(write: Callable[[_Fd], None]) -> bytes:
    """What libseccomp writes to a file descriptor, read back from memory: a
    memfd (a pipe with a reader thread where memfd_create is missing)."""
    try:
        fd = os.memfd_create("sandbox-seccomp", os.MFD_CLOEXEC)
    except (AttributeError, OSError):
        return _export_pipe(write)
    try:
        write(_Fd(fd))
        size = os.fstat(fd).st_size
        return os.pread(fd, size, 0)
    finally:
        os.close(fd)


def _export_pipe(write: Callable[[_Fd], None]) -> bytes:
    r, w = os.pipe2(os.O_CLOEXEC)
    chunks: list[bytes] = []

    def reader() -> None:
        while data := os.read(r, 65536):
            chunks.append(data)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        write(_Fd(w))
    finally:
        os.close(w)
        t.join()
        os.close(r)
    return b"".join(chunks)


def _build(doc: object, source: str | None, log: bool, caps: tuple[str, ...]) -> Any:
    """A libseccomp filter for `doc` (validated here, errors name the JSON path)."""
    lib = _lib()
    chk = _Checker(source, frozenset(caps), lib.native)
    prof = chk.profile(doc)
    default = prof.default
    if log and default != ACT_ALLOW:
        default = ACT_LOG
    mod = lib.mod
    try:
        flt = mod.SyscallFilter(default)
        flt.set_attr(_ATTR_ACT_BADARCH, ACT_KILL_PROCESS)
        flt.set_attr(_ATTR_CTL_NNP, 0)
        flt.set_attr(_ATTR_CTL_TSYNC, 0)
    except OSError as e:
        raise HostError(f"seccomp: libseccomp {lib.version} cannot set up a filter: {e}") from e
    try:
        flt.set_attr(_ATTR_CTL_OPTIMIZE, 2)
    except OSError:
        pass  # libseccomp before 2.5: a linear filter still works
    # nr -> [(action, conditional, where)] of the rules added so far
    seen: dict[int, list[tuple[int, bool, str]]] = {}
    for rule in prof.rules:
        if not rule.applies or rule.action == default:
            continue
        for name, where in rule.names:
            nr = lib.resolve(name)
            if nr == -1:
                continue  # unknown to libseccomp (and to us): not on this kernel, as Docker does
            _check_conflict(chk, seen.setdefault(nr, []), rule, name, where)
            counts = [0] * 6
            for c in rule.conds:
                counts[c.index] += 1
            # runc: an argument tested twice makes one rule per condition
            groups: list[tuple[_Cond, ...]] = (
                [(c,) for c in rule.conds] if max(counts, default=0) > 1 else [rule.conds]
            )
            for g in groups:
                args = [mod.Arg(c.index, c.op, c.a, c.b) for c in g]
                try:
                    flt.add_rule(rule.action, nr, *args)
                except OSError as e:
                    if e.errno == errno.EEXIST:
                        raise chk.fail(
                            where, f"{name!r}: these conditions already have another action"
                        ) from e
                    raise chk.fail(
                        where, f"{name!r}: libseccomp refused the rule: {os_error_text(e.errno or 0)}"
                    ) from e
    return flt


def _check_conflict(
    chk: _Checker, prior: list[tuple[int, bool, str]], rule: _Rule, name: str, where: str
) -> None:
    cond = bool(rule.conds)
    for action, other_cond, other in prior:
        if action == rule.action:
            continue
        if not cond and not other_cond:
            raise chk.fail(
                where, f"{name!r} already has an unconditional rule with another action at {other}"
            )
        if not cond or not other_cond:
            raise chk.fail(
                where,
                f"{name!r}: an unconditional rule and a conditional one with different actions "
                f"(here and at {other}): libseccomp would keep only the unconditional one; "
                "make both conditional, on disjoint conditions",
            )
    prior.append((rule.action, cond, where))


def _compile(doc: object, source: str | None, log: bool, caps: tuple[str, ...]) -> bytes:
    flt = _build(doc, source, log, caps)
    try:
        prog = _export(flt.export_bpf)
    except OSError as e:
        raise HostError(
            f"seccomp: libseccomp could not generate the filter: {os_error_text(e.errno or 0)}"
        ) from e
    n = len(prog) // 8
    if n > BPF_MAXINSNS:
        raise ProfileError(
            "", f"compiles to {n} BPF instructions; the kernel takes at most {BPF_MAXINSNS}", source
        )
    if not _plausible(prog):
        raise HostError(f"seccomp: libseccomp produced {len(prog)} bytes that are not a filter program")
    return prog


def _plausible(prog: bytes) -> bool:
    """A libseccomp program: whole instructions, at most BPF_MAXINSNS, starting
    with the load of seccomp_data.arch and ending with a return."""
    if not prog or len(prog) % 8 or len(prog) > BPF_MAXINSNS * 8:
        return False
    code, _, _, k = struct.unpack_from("=HBBI", prog, 0)
    last: int = struct.unpack_from("=HBBI", prog, len(prog) - 8)[0]
    return bool(code == 0x20 and k == 4 and (last & 0x07) == 0x06)


# -- loading profiles ----------------------------------------------------------------


_policies: list[Path] = []


def _policies_dir() -> Path:
    if not _policies:
        here = Path(__file__).resolve().parent
        found = here.parent / "policies"
        for d in (here / "policies", here.parent / "policies"):
            if (d / "default.json").is_file():
                found = d
                break
        _policies.append(found)
    return _policies[0]


def profile_path(name: str) -> Path:
    """The file of built-in profile `name` ('default' or 'judge')."""
    if name not in BUILTIN:
        raise ConfigError(OPTION, f"no built-in profile {name!r}: the built-in ones are {', '.join(BUILTIN)}")
    return _policies_dir() / f"{name}.json"


_HINT = (
    "pass 'default' or 'judge' for a built-in profile, None for no filter, "
    "or the path of a Docker-format JSON profile"
)


def _resolve(spec: str | os.PathLike[str]) -> tuple[str, str]:
    """(file path, label for messages)."""
    if isinstance(spec, str) and spec in BUILTIN:
        return str(profile_path(spec)), repr(spec)
    path = os.fspath(spec)
    if not isinstance(path, str) or not path:
        raise ConfigError(OPTION, f"expected a profile name or path, got {spec!r}; {_HINT}")
    return path, path


def _open(path: str) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConfigError(OPTION, f"{path}: no such profile file; {_HINT}") from None
    except OSError as e:
        raise ConfigError(OPTION, f"{path}: cannot open the profile: {os_error_text(e.errno or 0)}") from e


def _read(fd: int, path: str, st: os.stat_result) -> object:
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(OPTION, f"{path}: not a regular file; {_HINT}")
    if st.st_size > MAX_PROFILE_BYTES:
        raise ConfigError(
            OPTION, f"{path}: {st.st_size} bytes is too large for a seccomp profile (at most 1 MiB)"
        )
    chunks = []
    while data := os.read(fd, 1 << 16):
        chunks.append(data)
    raw = b"".join(chunks)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(OPTION, f"{path}: not valid UTF-8 (byte {e.start})") from None
    return _parse(text, path)


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON number")


def _parse(text: str, where: str) -> object:
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except json.JSONDecodeError as e:
        raise ConfigError(
            OPTION, f"{where}: not valid JSON: {e.msg} (line {e.lineno} column {e.colno})"
        ) from None
    except ValueError as e:
        raise ConfigError(OPTION, f"{where}: not valid JSON: {e}") from None


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"the key {k!r} appears twice in one object")
        out[k] = v
    return out


def _canonical(doc: object) -> bytes:
    """The profile as sorted, compact JSON: what the cache key hashes."""
    try:
        text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ConfigError(OPTION, f"the profile dict is not JSON data: {e}") from None
    return text.encode()


# -- caches --------------------------------------------------------------------------

_MEMORY_MAX = 128
_programs: dict[str, bytes] = {}  # cache key -> program
_files: dict[tuple[object, ...], str] = {}  # (path, file identity, log, caps) -> cache key
_builtins: dict[tuple[str, bool, tuple[str, ...]], bytes] = {}  # (name, log, caps) -> program
_lock = threading.Lock()


def clear_memory_cache() -> None:
    """Forget the compiled programs held in memory (the disk cache stays),
    and the Specs that carry them (sandbox/spec.py)."""
    from . import spec

    with _lock:
        _programs.clear()
        _files.clear()
        _builtins.clear()
    spec.forget_specs()


def cache_dir() -> Path:
    """$SANDBOX_HOME/cache/seccomp (SANDBOX_HOME defaults to /var/lib/sandbox)."""
    return Path(os.environ.get("SANDBOX_HOME") or "/var/lib/sandbox") / "cache" / "seccomp"


def _cache_key(canonical: bytes, log: bool, caps: tuple[str, ...]) -> str:
    lib = _lib()
    k, m = _kernel_version()
    head = f"sandbox-seccomp/{FORMAT}\0libseccomp {lib.version}\0arch {lib.native:#x}\0kernel {k}.{m}\0"
    head += f"log {int(log)}\0caps {','.join(caps)}\0"
    return hashlib.sha256(head.encode() + canonical).hexdigest()


def _remember(key: str, prog: bytes) -> None:
    with _lock:
        _programs[key] = prog
        while len(_programs) > _MEMORY_MAX:
            del _programs[next(iter(_programs))]


def _safe_dir(d: Path) -> bool:
    try:
        st = os.lstat(d)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o022


def _disk_load(key: str) -> bytes | None:
    d = cache_dir()
    if not _safe_dir(d):
        return None
    try:
        fd = os.open(d / f"{key}.bpf", os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
            return None
        if st.st_size > BPF_MAXINSNS * 8:
            return None
        prog = os.read(fd, BPF_MAXINSNS * 8 + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    return prog if _plausible(prog) else None


def _disk_store(key: str, prog: bytes) -> None:
    d = cache_dir()
    try:
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError:
        return
    if not _safe_dir(d):
        return
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".bpf", dir=d)
    except OSError:
        return
    try:
        try:
            view = memoryview(prog)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, d / f"{key}.bpf")
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass


# -- the entry points ----------------------------------------------------------------


def _identity(path: str, st: os.stat_result, log: bool, caps: tuple[str, ...]) -> tuple[object, ...]:
    return (
        os.path.abspath(path),
        st.st_dev,
        st.st_ino,
        st.st_size,
        st.st_mtime_ns,
        st.st_ctime_ns,
        log,
        caps,
    )


def _document(
    spec: str | os.PathLike[str] | Mapping[str, object], log: bool, caps: tuple[str, ...]
) -> tuple[object, str | None, tuple[object, ...] | None]:
    """(parsed profile, label for messages, file identity for the memo)."""
    if isinstance(spec, Mapping):
        return _parse(_canonical(spec).decode(), "the profile dict"), None, None
    if not isinstance(spec, (str, os.PathLike)):
        raise ConfigError(
            OPTION, f"expected a profile name, a path or a dict, got {type(spec).__name__}; {_HINT}"
        )
    path, label = _resolve(spec)
    fd = _open(path)
    try:
        st = os.fstat(fd)
        return _read(fd, path, st), label, _identity(path, st, log, caps)
    finally:
        os.close(fd)


def compile_profile(
    spec: str | os.PathLike[str] | Mapping[str, object] | None,
    *,
    log: bool = False,
    cap_add: Iterable[str] = (),
) -> bytes | None:
    """The BPF program for a seccomp profile, or None for `spec=None`.

    `spec`: "default", "judge", a path to a Docker-format JSON profile, or the
    parsed profile as a dict.  `log`: denials by the default action are
    allowed and logged (for writing profiles).  `cap_add`: the capabilities
    the sandbox keeps, for the profile's includes/excludes.  Raises
    ConfigError (a ProfileError naming the JSON path) for a bad profile,
    HostError when libseccomp is missing.
    """
    if spec is None:
        return None
    if not isinstance(log, bool):
        raise ConfigError(OPTION, f"log: expected True or False, got {log!r}")
    caps = _norm_caps(cap_add)
    # Fastest: a built-in profile compiled before.  Its file is the package's,
    # which changes only with a reinstall (a new process); the stat of the
    # path below costs 20-60 us of a start, most of it waiting to retake
    # the interpreter lock from our background threads.
    builtin = (spec, log, caps) if isinstance(spec, str) and spec in BUILTIN else None
    if builtin is not None and (prog := _builtins.get(builtin)) is not None:
        return prog
    # Fast path: a file seen before, unchanged (same inode, size, mtime, ctime).
    if isinstance(spec, (str, os.PathLike)) and _files:
        try:
            path, _ = _resolve(spec)
            key = _files.get(_identity(path, os.stat(path), log, caps))
            if key is not None and (prog := _programs.get(key)) is not None:
                return prog
        except (OSError, ConfigError):
            pass  # the slow path reports it
    if isinstance(spec, Mapping):
        # A dict: its canonical dump is the key; it is parsed (and checked) only on a miss.
        canonical = _canonical(spec)
        key = _cache_key(canonical, log, caps)
        if (prog := _programs.get(key)) is not None:
            return prog
        doc: object = _parse(canonical.decode(), "the profile dict")
        label, ident = None, None
    else:
        doc, label, ident = _document(spec, log, caps)
        key = _cache_key(_canonical(doc), log, caps)
    prog = _programs.get(key)
    if prog is None:
        prog = _disk_load(key)
        if prog is None:
            prog = _compile(doc, label, log, caps)
            _disk_store(key, prog)
        _remember(key, prog)
    if ident is not None:
        with _lock:
            _files[ident] = key
            while len(_files) > _MEMORY_MAX:
                del _files[next(iter(_files))]
    if builtin is not None:
        with _lock:
            _builtins[builtin] = prog
            while len(_builtins) > _MEMORY_MAX:
                del _builtins[next(iter(_builtins))]
    return prog


def pfc(
    spec: str | os.PathLike[str] | Mapping[str, object],
    *,
    log: bool = False,
    cap_add: Iterable[str] = (),
) -> str:
    """libseccomp's pseudo-C listing of the filter `compile_profile` would
    build (not cached): for reading what a profile really does."""
    caps = _norm_caps(cap_add)
    doc, label, _ = _document(spec, log, caps)
    flt = _build(doc, label, log, caps)
    return _export(flt.export_pfc).decode("utf-8", "replace")
