"""sandbox.seccomp: Docker-format profiles compiled to BPF, their validation,
the caches, and our two profiles (checked by running the compiled program in
a small classic-BPF interpreter: no kernel feature needed)."""

from __future__ import annotations

import json
import os
import stat
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox import seccomp
from sandbox.errors import ConfigError

ALLOW = seccomp.ACT_ALLOW
LOG = seccomp.ACT_LOG
KILL_PROCESS = seccomp.ACT_KILL_PROCESS


def ERRNO(n: int) -> int:
    return seccomp.ACT_ERRNO | n


EPERM, ENOSYS, EPROTONOSUPPORT = ERRNO(1), ERRNO(38), ERRNO(93)
NATIVE = seccomp._lib().native
X86_64 = 0xC000003E
AUDIT_ARCH_I386 = 0x40000003
M32 = 0xFFFFFFFF
CLONE_NEWUSER, CLONE_NEWNET, CLONE_NEWNS = 0x10000000, 0x40000000, 0x20000
TIOCSTI, TIOCLINUX, TCGETS = 0x5412, 0x541C, 0x5401
AF_UNIX, AF_INET, AF_INET6, AF_NETLINK, AF_PACKET, AF_ALG, AF_VSOCK = 1, 2, 10, 16, 17, 38, 40

x86_64_only = pytest.mark.skipif(NATIVE != X86_64, reason="syscall numbers and ABIs of x86_64")


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Each test gets its own SANDBOX_HOME (so its own disk cache) and an
    empty memory cache."""
    monkeypatch.setenv("SANDBOX_HOME", str(tmp_path / "home"))
    seccomp.clear_memory_cache()
    yield tmp_path / "home"
    seccomp.clear_memory_cache()


# -- a classic BPF interpreter, for what the kernel would answer ----------------------


def run_bpf(prog: bytes, nr: int, args: tuple[int, ...] = (), arch: int = NATIVE) -> int:
    """The SECCOMP_RET_* value `prog` returns for a call (args are 64-bit)."""
    a6 = [*args, 0, 0, 0, 0, 0, 0][:6]
    data = struct.pack("=iIQ6Q", nr, arch, 0, *a6)
    insns = [struct.unpack_from("=HBBI", prog, i) for i in range(0, len(prog), 8)]
    A = X = 0
    mem = [0] * 16
    pc = 0
    for _ in range(100000):
        code, jt, jf, k = insns[pc]
        cls = code & 0x07
        pc += 1
        if cls == 0x00:  # LD
            mode = code & 0xE0
            if mode == 0x20:
                assert code & 0x18 == 0, "only 32-bit loads"
                (A,) = struct.unpack_from("=I", data, k)
            elif mode == 0x60:
                A = mem[k]
            elif mode == 0x00:
                A = k
            else:
                raise AssertionError(f"LD mode {mode:#x}")
        elif cls == 0x01:  # LDX
            X = mem[k] if code & 0xE0 == 0x60 else k
        elif cls == 0x02:
            mem[k] = A
        elif cls == 0x03:
            mem[k] = X
        elif cls == 0x04:  # ALU
            src = X if code & 0x08 else k
            A = _alu(code & 0xF0, A, src)
        elif cls == 0x05:  # JMP
            op = code & 0xF0
            if op == 0x00:
                pc += k
                continue
            src = X if code & 0x08 else k
            cond = {0x10: src == A, 0x20: src < A, 0x30: src <= A, 0x40: bool(A & src)}[op]
            pc += jt if cond else jf
        elif cls == 0x06:  # RET
            return A if code & 0x18 == 0x10 else k
        elif cls == 0x07:
            if code & 0xF8 == 0x00:
                X = A
            else:
                A = X
        else:
            raise AssertionError(f"instruction class {cls}")
    raise AssertionError("the program does not end")


def _alu(op: int, a: int, src: int) -> int:
    if op == 0x00:
        r = a + src
    elif op == 0x10:
        r = a - src
    elif op == 0x40:
        r = a | src
    elif op == 0x50:
        r = a & src
    elif op == 0x60:
        r = a << src
    elif op == 0x70:
        r = a >> src
    elif op == 0xA0:
        r = a ^ src
    else:
        raise AssertionError(f"ALU op {op:#x}")
    return r & 0xFFFFFFFF


def nr(name: str) -> int:
    n = seccomp._lib().resolve(name)
    assert n >= 0, name
    return n


def prog(spec: Any = "default", **kw: Any) -> bytes:
    p = seccomp.compile_profile(spec, **kw)
    assert p is not None
    return p


def verdict(p: bytes, name: str, *args: int) -> int:
    return run_bpf(p, nr(name), args)


def mini(*rules: dict[str, Any], default: str = "SCMP_ACT_ERRNO", **top: Any) -> dict[str, Any]:
    return {"defaultAction": default, **top, "syscalls": list(rules)}


def builtin(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(seccomp.profile_path(name).read_text())
    return doc


# -- the program itself ---------------------------------------------------------------


@pytest.mark.parametrize("name", seccomp.BUILTIN)
def test_program_format(name: str) -> None:
    p = prog(name)
    assert isinstance(p, bytes)
    assert len(p) % 8 == 0 and 0 < len(p) // 8 <= seccomp.BPF_MAXINSNS
    insns = [struct.unpack_from("=HBBI", p, i) for i in range(0, len(p), 8)]
    assert insns[0] == (0x20, 0, 0, 4)  # ld [4]: seccomp_data.arch
    assert insns[1][0] == 0x15 and insns[1][3] == NATIVE  # jeq native arch
    assert insns[-1][0] == 0x06  # ends with a return
    rets = {k for code, _, _, k in insns if code == 0x06}
    assert KILL_PROCESS in rets and EPERM in rets and ALLOW in rets
    for i, (code, jt, jf, _) in enumerate(insns):  # every jump lands inside the program
        if code & 0x07 == 0x05 and code & 0xF0:
            assert i + 1 + max(jt, jf) < len(insns)


def test_none_means_no_filter() -> None:
    assert seccomp.compile_profile(None) is None


def test_profiles_and_modes_give_different_programs() -> None:
    progs = {
        prog("default"),
        prog("judge"),
        prog("default", log=True),
        prog("default", cap_add=["CAP_SYS_PTRACE"]),
    }
    assert len(progs) == 4


def test_other_architectures_are_killed() -> None:
    p = prog("default")
    assert run_bpf(p, 20, arch=AUDIT_ARCH_I386) == KILL_PROCESS
    assert run_bpf(p, nr("read"), arch=0xC00000B7 if NATIVE == X86_64 else X86_64) == KILL_PROCESS


@x86_64_only
def test_x32_abi_is_killed() -> None:
    assert run_bpf(prog("default"), 0x40000000 | 39) == KILL_PROCESS


def test_helpers() -> None:
    assert seccomp.syscall_name(nr("clone3")) == "clone3"
    assert seccomp.syscall_name(99999) == "syscall 99999"
    assert seccomp.libseccomp_version().count(".") == 2
    assert "ERRNO(38)" in seccomp.pfc("default")


# -- our two profiles: what they allow and deny ----------------------------------------


NAMESPACE_AND_MOUNT = [
    "unshare", "setns", "mount", "umount2", "pivot_root", "open_tree", "move_mount",
    "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
]  # fmt: skip
ALWAYS_DENIED = [
    "keyctl", "add_key", "request_key", "bpf", "perf_event_open", "userfaultfd",
    "io_uring_setup", "io_uring_enter", "io_uring_register", "ptrace", "process_vm_readv",
    "process_vm_writev", "kexec_load", "kexec_file_load", "init_module", "finit_module",
    "delete_module", "reboot", "swapon", "swapoff", "acct", "clock_settime", "settimeofday",
    "adjtimex", "clock_adjtime", "lookup_dcookie", "quotactl", "nfsservctl", "vhangup", "iopl",
    "ioperm", "syslog", "name_to_handle_at", "open_by_handle_at", "uselib", "ustat", "sysfs",
    "_sysctl", "kcmp", "pidfd_getfd", "chroot", "modify_ldt", "fanotify_init", "sync",
]  # fmt: skip
ORDINARY = [
    "read", "write", "openat", "close", "newfstatat", "statx", "mmap", "mprotect", "munmap", "brk",
    "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "futex", "set_robust_list", "rseq",
    "arch_prctl", "set_tid_address", "execve", "wait4", "exit_group", "pipe2", "dup3", "fcntl",
    "epoll_create1", "epoll_ctl", "epoll_wait", "select", "poll", "getrandom", "prlimit64",
    "clock_gettime", "nanosleep", "getdents64", "faccessat2", "close_range", "vfork", "fork",
    "kill", "connect", "sendmsg", "recvmsg", "madvise", "sched_getaffinity", "prctl", "uname",
]  # fmt: skip


@pytest.mark.parametrize("name", seccomp.BUILTIN)
def test_every_name_in_our_profiles_is_a_syscall(name: str) -> None:
    """A typo would be skipped silently, as Docker does for unknown names."""
    for i, rule in enumerate(builtin(name)["syscalls"]):
        for n in rule["names"]:
            assert seccomp._lib().resolve(n) != -1, f"syscalls[{i}]: {n!r} is not known"


@pytest.mark.parametrize("name", seccomp.BUILTIN)
def test_our_profiles_obey_the_64_bit_rule(name: str) -> None:
    """32-bit arguments: no NE/GT/GE/LE (bypassed by setting the upper half);
    MASKED_EQ masks within 32 bits; EQ and LT (fail closed) only to allow;
    deny rules only with MASKED_EQ, which the upper half cannot dodge."""
    for i, rule in enumerate(builtin(name)["syscalls"]):
        for j, arg in enumerate(rule.get("args", [])):
            where = f"{name}: syscalls[{i}].args[{j}] ({rule['names']})"
            op = arg["op"]
            assert op in ("SCMP_CMP_EQ", "SCMP_CMP_LT", "SCMP_CMP_MASKED_EQ"), where
            if op == "SCMP_CMP_MASKED_EQ":
                assert 0 < arg["value"] <= M32, where
                assert arg.get("valueTwo", 0) & ~arg["value"] == 0, f"{where}: can never match"
            else:
                assert rule["action"] == "SCMP_ACT_ALLOW", where
                assert arg.get("value", 0) <= M32, where


@pytest.mark.parametrize("name", seccomp.BUILTIN)
def test_denied_syscalls(name: str) -> None:
    p = prog(name)
    for s in NAMESPACE_AND_MOUNT + ALWAYS_DENIED:
        assert verdict(p, s) == EPERM, s
    assert verdict(p, "memfd_secret") == ENOSYS
    assert verdict(p, "clone3") == ENOSYS


@pytest.mark.parametrize("name", seccomp.BUILTIN)
def test_ordinary_syscalls_are_allowed(name: str) -> None:
    p = prog(name)
    for s in ORDINARY:
        assert verdict(p, s) == ALLOW, s


@pytest.mark.parametrize("name", seccomp.BUILTIN)
def test_clone_only_without_namespace_flags(name: str) -> None:
    p = prog(name)
    thread_flags = 0x3D0F00  # what glibc's pthread_create passes
    assert verdict(p, "clone", thread_flags) == ALLOW
    assert verdict(p, "clone", 17) == ALLOW  # fork-like
    assert verdict(p, "clone", (0xFFFFFFFF << 32) | 17) == ALLOW  # kernel ignores the upper half
    for flag in (CLONE_NEWNS, 0x02000000, 0x04000000, 0x08000000, CLONE_NEWUSER, 0x20000000, CLONE_NEWNET):
        assert verdict(p, "clone", flag | 17) == EPERM, hex(flag)
        assert verdict(p, "clone", (1 << 32) | flag | 17) == EPERM, hex(flag)


@pytest.mark.parametrize("name", seccomp.BUILTIN)
def test_ioctl_everything_but_tiocsti_and_tioclinux(name: str) -> None:
    p = prog(name)
    for hi in (0, 1, 0xFFFFFFFF, 0x80000000):
        for cmd in (TIOCSTI, TIOCLINUX):
            assert verdict(p, "ioctl", 0, (hi << 32) | cmd) == EPERM, (hi, hex(cmd))
        for cmd in (TCGETS, 0x5413, 0x541B, 0x80045430, 0xC0185879, 0x5410, 0x5416, 0x541D, 0x1541C, 0x15412):
            assert verdict(p, "ioctl", 0, (hi << 32) | cmd) == ALLOW, (hi, hex(cmd))
    for cmd in range(0x5400, 0x5500):  # the whole tty range
        want = EPERM if cmd in (TIOCSTI, TIOCLINUX) else ALLOW
        assert verdict(p, "ioctl", 0, cmd) == want, hex(cmd)


@pytest.mark.parametrize("name", seccomp.BUILTIN)
def test_personality(name: str) -> None:
    p = prog(name)
    for v in (0, 0xFFFFFFFF, 0xFFFFFFFF_FFFFFFFF):
        assert verdict(p, "personality", v) == ALLOW, hex(v)
    for v in (0x0040000, 0x0400000, (1 << 32) | 0x0040000, 0x0020000 | 0x0040000):
        assert verdict(p, "personality", v) == EPERM, hex(v)


def test_default_sockets() -> None:
    p = prog("default")
    hi = 1 << 32
    allowed = [
        (AF_UNIX, 1, 0), (AF_UNIX, 2 | 0x80000, 0), (AF_INET, 1, 0), (AF_INET, 1 | 0x800 | 0x80000, 6),
        (AF_INET, 2, 17), (AF_INET, 2, 1), (AF_INET6, 1, 0), (AF_INET6, 2, 58), (AF_NETLINK, 3, 0),
        (AF_NETLINK, 2 | 0x80000, 4), (hi | AF_INET, 1, 0),
        (AF_NETLINK, 3, hi),  # the kernel sees protocol 0, NETLINK_ROUTE
    ]  # fmt: skip
    for args in allowed:
        assert verdict(p, "socket", *args) == ALLOW, args
    denied = [
        (AF_ALG, 5, 0), (AF_VSOCK, 1, 0), (hi | AF_ALG, 5, 0), (hi | AF_VSOCK, 1, 0), (AF_PACKET, 3, 0),
        (31, 1, 0), (AF_INET, 1, 132), (AF_INET, 5, 132), (AF_INET, 3, 1), (AF_INET6, 6, 0),
        (AF_NETLINK, 3, 12), (AF_NETLINK, 3, 6), (AF_NETLINK, 3, 16),
    ]  # fmt: skip
    for args in denied:
        assert verdict(p, "socket", *args) == EPERM, args
    assert verdict(p, "socket", AF_NETLINK, 3, 9) == EPROTONOSUPPORT  # NETLINK_AUDIT
    assert verdict(p, "socketpair", AF_UNIX, 1, 0) == ALLOW
    assert verdict(p, "socketpair", AF_INET, 1, 0) == EPERM


def test_judge_takes_more_away() -> None:
    d, j = prog("default"), prog("judge")
    for args in ((AF_INET, 1, 0), (AF_INET6, 2, 17), (AF_NETLINK, 3, 0)):
        assert verdict(d, "socket", *args) == ALLOW
        assert verdict(j, "socket", *args) == EPERM
    assert verdict(j, "socket", AF_UNIX, 1, 0) == ALLOW
    for s in ("mknod", "mknodat", "shmget", "semget", "msgget", "mq_open", "io_setup", "vmsplice"):
        assert verdict(d, s) == ALLOW, s
        assert verdict(j, s) == EPERM, s
    assert verdict(d, "memfd_create") == ALLOW
    assert verdict(j, "memfd_create") == ENOSYS
    assert verdict(d, "personality", 8) == ALLOW
    assert verdict(j, "personality", 8) == EPERM
    for s in ("fork", "vfork", "execve", "wait4"):  # compilers are multi-process
        assert verdict(j, s) == ALLOW


def test_cap_add_opens_the_matching_rules_in_default_only() -> None:
    p = prog("default", cap_add=["CAP_SYS_PTRACE"])
    assert verdict(p, "ptrace") == ALLOW and verdict(p, "process_vm_readv") == ALLOW
    assert verdict(p, "mount") == EPERM
    p = prog("default", cap_add=["sys_admin"])  # the prefix is optional
    assert verdict(p, "mount") == ALLOW and verdict(p, "unshare") == ALLOW
    assert verdict(p, "clone", CLONE_NEWUSER | 17) == ALLOW
    assert verdict(p, "clone3") == ALLOW
    assert verdict(p, "bpf") == EPERM and verdict(p, "keyctl") == EPERM  # never
    p = prog("default", cap_add=["CAP_NET_RAW", "CAP_NET_ADMIN"])
    assert verdict(p, "socket", AF_PACKET, 3, 0) == ALLOW
    assert verdict(p, "socket", AF_NETLINK, 3, 12) == ALLOW
    assert verdict(p, "socket", AF_NETLINK, 3, 9) == ALLOW
    j = prog("judge", cap_add=["CAP_SYS_ADMIN", "CAP_SYS_PTRACE"])
    assert verdict(j, "mount") == EPERM and verdict(j, "ptrace") == EPERM


def test_log_mode() -> None:
    p = prog("default", log=True)
    assert LOG in {struct.unpack_from("=HBBI", p, i)[3] for i in range(0, len(p), 8)}
    assert verdict(p, "personality", 0x0040000) == LOG  # only the default action denied it
    assert verdict(p, "socket", 31, 1, 0) == LOG
    # the explicit deny lists stay in force
    assert verdict(p, "unshare") == EPERM and verdict(p, "mount") == EPERM
    assert verdict(p, "clone", CLONE_NEWUSER | 17) == EPERM
    assert verdict(p, "socket", AF_VSOCK, 1, 0) == EPERM
    assert verdict(p, "ioctl", 0, (1 << 32) | TIOCSTI) == EPERM
    assert verdict(p, "clone3") == ENOSYS
    assert verdict(p, "read") == ALLOW
    # a profile whose default allows stays so
    q = prog(mini({"names": ["mount"], "action": "SCMP_ACT_ERRNO"}, default="SCMP_ACT_ALLOW"), log=True)
    assert verdict(q, "read") == ALLOW and verdict(q, "mount") == EPERM


# -- the format -----------------------------------------------------------------------


def test_docker_style_profile() -> None:
    doc = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "archMap": [
            {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
            {"architecture": "SCMP_ARCH_RISCV64", "subArchitectures": None},
        ],
        "syscalls": [
            {
                "names": ["read", "write", "exit_group", "socketcall", "no_such_syscall_xyz"],
                "action": "SCMP_ACT_ALLOW",
            },
            {"name": "getpid", "action": "SCMP_ACT_ALLOW"},
            {"names": ["getppid"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "4.8"}},
            {"names": ["gettid"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "999.0"}},
            {"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["amd64", "arm64"]}},
            {"names": ["getuid"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["s390x"]}},
            {"names": ["getgid"], "action": "SCMP_ACT_ALLOW", "excludes": {"arches": ["amd64", "arm64"]}},
            {"names": ["chroot"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_CHROOT"]}},
            {
                "names": ["mount"],
                "action": "SCMP_ACT_ALLOW",
                "includes": {"caps": ["CAP_SYS_ADMIN", "CAP_X"]},
            },
            {"names": ["getegid"], "action": "SCMP_ACT_ALLOW", "excludes": {"caps": ["CAP_SYS_CHROOT"]}},
            {"names": ["kill"], "action": "SCMP_ACT_KILL_PROCESS", "comment": "a comment"},
            {"names": ["tkill"], "action": "SCMP_ACT_TRAP"},
            {"names": ["tgkill"], "action": "SCMP_ACT_KILL"},
            {"names": ["ptrace"], "action": "SCMP_ACT_TRACE", "errnoRet": 7},
            {"names": ["mknod"], "action": "SCMP_ACT_LOG"},
            {"names": ["unlink"], "action": "SCMP_ACT_ERRNO"},  # = the default: dropped
            {"names": ["statmount"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
        ],
    }
    p = prog(doc, cap_add=["CAP_SYS_CHROOT", "CAP_SYS_ADMIN"])
    assert verdict(p, "read") == ALLOW and verdict(p, "getpid") == ALLOW and verdict(p, "getppid") == ALLOW
    assert verdict(p, "gettid") == EPERM  # minKernel 999.0
    native_names = NATIVE in (X86_64, 0xC00000B7)
    assert verdict(p, "arch_prctl" if NATIVE == X86_64 else "read") == ALLOW
    if native_names:
        assert verdict(p, "getuid") == EPERM and verdict(p, "getgid") == EPERM
    assert verdict(p, "chroot") == ALLOW
    assert verdict(p, "mount") == EPERM  # includes needs every cap listed
    assert verdict(p, "getegid") == EPERM  # excluded: a listed cap is present
    assert verdict(p, "kill") == KILL_PROCESS
    assert verdict(p, "tkill") == seccomp.ACT_TRAP
    assert verdict(p, "tgkill") == seccomp.ACT_KILL_THREAD
    assert verdict(p, "ptrace") == seccomp.ACT_TRACE | 7
    assert verdict(p, "mknod") == LOG
    if native_names:
        assert run_bpf(p, 457) == ENOSYS  # statmount, placed by number
    q = prog(doc)
    assert verdict(q, "chroot") == EPERM and verdict(q, "getegid") == ALLOW


def test_conditions_and_or_like_runc() -> None:
    # distinct arguments: all must hold; the same argument twice: any may hold
    p = prog(
        mini(
            {
                "names": ["socket"],
                "action": "SCMP_ACT_ALLOW",
                "args": [
                    {"index": 0, "op": "SCMP_CMP_EQ", "value": 2},
                    {"index": 1, "op": "SCMP_CMP_EQ", "value": 1},
                ],
            },
            {
                "names": ["personality"],
                "action": "SCMP_ACT_ALLOW",
                "args": [
                    {"index": 0, "op": "SCMP_CMP_EQ", "value": 0},
                    {"index": 0, "op": "SCMP_CMP_EQ", "value": 8},
                ],
            },
            {
                "names": ["write"],
                "action": "SCMP_ACT_ALLOW",
                "args": [{"index": 2, "op": "SCMP_CMP_LT", "value": 100}],
            },
            {
                "names": ["read"],
                "action": "SCMP_ACT_ALLOW",
                "args": [{"index": 0, "op": "SCMP_CMP_MASKED_EQ", "value": 0xF0, "valueTwo": 0x30}],
            },
        )
    )
    assert verdict(p, "socket", 2, 1) == ALLOW
    assert verdict(p, "socket", 2, 2) == EPERM and verdict(p, "socket", 10, 1) == EPERM
    assert verdict(p, "personality", 0) == ALLOW and verdict(p, "personality", 8) == ALLOW
    assert verdict(p, "personality", 9) == EPERM
    assert verdict(p, "write", 1, 0, 99) == ALLOW and verdict(p, "write", 1, 0, 100) == EPERM
    assert verdict(p, "write", 1, 0, (1 << 32) | 5) == EPERM  # LT fails closed on the upper half
    assert verdict(p, "read", 0x3F) == ALLOW and verdict(p, "read", 0x4F) == EPERM


def test_same_profile_in_other_spelling_is_the_same_program(tmp_path: Path) -> None:
    doc = mini({"names": ["read"], "action": "SCMP_ACT_ALLOW"}, defaultErrnoRet=1)
    f = tmp_path / "p.json"
    f.write_text(json.dumps(doc, indent=4, sort_keys=False))
    assert prog(f) == prog(str(f)) == prog(doc) == prog({k: doc[k] for k in reversed(list(doc))})


# -- errors name the JSON path ---------------------------------------------------------

OPS = "SCMP_CMP_NE, SCMP_CMP_LT, SCMP_CMP_LE, SCMP_CMP_EQ, SCMP_CMP_GE, SCMP_CMP_GT, SCMP_CMP_MASKED_EQ"
ALLOW_RULE: dict[str, Any] = {"names": ["read"], "action": "SCMP_ACT_ALLOW"}


def bad_op_profile() -> dict[str, Any]:
    arg = {"index": 1, "op": "SCMP_CMP_FOO", "value": 1}
    return mini(
        ALLOW_RULE, ALLOW_RULE, ALLOW_RULE, {"names": ["ioctl"], "action": "SCMP_ACT_ALLOW", "args": [arg]}
    )


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (
            bad_op_profile(),
            f"seccomp: syscalls[3].args[0].op: unknown operator 'SCMP_CMP_FOO' (expected one of {OPS})",
        ),
        ({"syscalls": []}, "seccomp: missing field 'defaultAction' (e.g. \"SCMP_ACT_ERRNO\")"),
        (
            mini(defaultActon=1),
            "seccomp: defaultActon: unknown field (expected one of: defaultAction, "
            "defaultErrnoRet, architectures, archMap, syscalls, flags, comment, listenerPath, "
            "listenerMetadata)",
        ),
        (
            {"defaultAction": "SCMP_ACT_DENY"},
            "seccomp: defaultAction: unknown action 'SCMP_ACT_DENY' (expected "
            "one of SCMP_ACT_KILL, SCMP_ACT_KILL_THREAD, SCMP_ACT_KILL_PROCESS, SCMP_ACT_TRAP, "
            "SCMP_ACT_ERRNO, SCMP_ACT_TRACE, SCMP_ACT_ALLOW, SCMP_ACT_LOG)",
        ),
        ({"defaultAction": 3}, "seccomp: defaultAction: expected a string, got the number 3"),
        (
            {"defaultAction": "SCMP_ACT_ALLOW", "defaultErrnoRet": 1},
            "seccomp: defaultErrnoRet: goes only with SCMP_ACT_ERRNO or SCMP_ACT_TRACE, not SCMP_ACT_ALLOW",
        ),
        (
            {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 5000},
            "seccomp: defaultErrnoRet: 5000 is out of range (0..4095)",
        ),
        (
            {"defaultAction": "SCMP_ACT_NOTIFY"},
            "seccomp: defaultAction: SCMP_ACT_NOTIFY is not supported: user "
            "notification needs a listener process, which the sandbox does not run",
        ),
        (
            mini(listenerPath="/run/x.sock"),
            "seccomp: listenerPath: not supported: user notification needs a "
            "listener process, which the sandbox does not run",
        ),
        (
            mini(architectures=["SCMP_ARCH_X86_64", "x86"]),
            "seccomp: architectures[1]: unknown architecture 'x86' (names are like SCMP_ARCH_X86_64)",
        ),
        (
            mini(archMap=[{"architecture": "SCMP_ARCH_FOO"}]),
            "seccomp: archMap[0].architecture: unknown "
            "architecture 'SCMP_ARCH_FOO' (names are like SCMP_ARCH_X86_64)",
        ),
        (mini(archMap=[{"subArchitectures": []}]), "seccomp: archMap[0]: missing field 'architecture'"),
        (
            mini(flags=["SECCOMP_FILTER_FLAG_FOO"]),
            "seccomp: flags[0]: unknown flag 'SECCOMP_FILTER_FLAG_FOO' "
            "(expected one of SECCOMP_FILTER_FLAG_LOG, SECCOMP_FILTER_FLAG_SPEC_ALLOW, "
            "SECCOMP_FILTER_FLAG_TSYNC, SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV)",
        ),
        (
            {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": {}},
            "seccomp: syscalls: expected a list, got an object",
        ),
        (mini(ALLOW_RULE, "read"), "seccomp: syscalls[1]: expected an object, got the string 'read'"),
        (
            mini({"nmes": ["read"], "action": "SCMP_ACT_ALLOW"}),
            "seccomp: syscalls[0].nmes: unknown field "
            "(expected one of: names, name, action, errnoRet, args, includes, excludes, comment)",
        ),
        (
            mini({"action": "SCMP_ACT_ALLOW"}),
            "seccomp: syscalls[0]: missing field 'names' (the system calls this rule is for)",
        ),
        (
            mini({"names": ["read"], "name": "read", "action": "SCMP_ACT_ALLOW"}),
            "seccomp: syscalls[0]: give either 'names' or 'name', not both",
        ),
        (mini({"names": [], "action": "SCMP_ACT_ALLOW"}), "seccomp: syscalls[0].names: is empty"),
        (
            mini({"names": "read", "action": "SCMP_ACT_ALLOW"}),
            "seccomp: syscalls[0].names: expected a list, got the string 'read'",
        ),
        (
            mini({"names": ["read", 7], "action": "SCMP_ACT_ALLOW"}),
            "seccomp: syscalls[0].names[1]: expected a string, got the number 7",
        ),
        (
            mini({"names": ["read", "Write!"], "action": "SCMP_ACT_ALLOW"}),
            "seccomp: syscalls[0].names[1]: 'Write!' is not a system call name",
        ),
        (
            mini({"names": ["read"]}),
            "seccomp: syscalls[0]: missing field 'action' (one of SCMP_ACT_KILL, "
            "SCMP_ACT_KILL_THREAD, SCMP_ACT_KILL_PROCESS, SCMP_ACT_TRAP, SCMP_ACT_ERRNO, SCMP_ACT_TRACE, "
            "SCMP_ACT_ALLOW, SCMP_ACT_LOG)",
        ),
        (
            mini({"names": ["read"], "action": "SCMP_ACT_ALLOW", "errnoRet": 1}),
            "seccomp: syscalls[0].errnoRet: goes only with SCMP_ACT_ERRNO or SCMP_ACT_TRACE, "
            "not SCMP_ACT_ALLOW",
        ),
        (
            mini({"names": ["read"], "action": "SCMP_ACT_ERRNO", "errnoRet": "EPERM"}),
            "seccomp: syscalls[0].errnoRet: expected an integer, got the string 'EPERM'",
        ),
        (
            mini({"names": ["read"], "action": "SCMP_ACT_ALLOW", "args": {}}),
            "seccomp: syscalls[0].args: expected a list, got an object",
        ),
        (
            mini({"names": ["read"], "action": "SCMP_ACT_ALLOW", "args": [{"op": "SCMP_CMP_EQ"}]}),
            "seccomp: syscalls[0].args[0]: missing field 'index' (the argument number, 0..5)",
        ),
        (
            mini({"names": ["read"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0}]}),
            f"seccomp: syscalls[0].args[0]: missing field 'op' (one of {OPS})",
        ),
        (
            mini(
                {"names": ["read"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 6, "op": "SCMP_CMP_EQ"}]}
            ),
            "seccomp: syscalls[0].args[0].index: 6 is out of range (0..5)",
        ),
        (
            mini(
                {
                    "names": ["read"],
                    "action": "SCMP_ACT_ALLOW",
                    "args": [{"index": True, "op": "SCMP_CMP_EQ"}],
                }
            ),
            "seccomp: syscalls[0].args[0].index: expected an integer, got the boolean true",
        ),
        (
            mini(
                {
                    "names": ["read"],
                    "action": "SCMP_ACT_ALLOW",
                    "args": [{"index": 0, "op": "SCMP_CMP_EQ", "value": -1}],
                }
            ),
            "seccomp: syscalls[0].args[0].value: -1 is out of range (0..18446744073709551615)",
        ),
        (
            mini(
                {
                    "names": ["read"],
                    "action": "SCMP_ACT_ALLOW",
                    "args": [{"index": 0, "op": "SCMP_CMP_EQ", "valueTwo": 1 << 64}],
                }
            ),
            "seccomp: syscalls[0].args[0].valueTwo: 18446744073709551616 is out of range "
            "(0..18446744073709551615)",
        ),
        (
            mini(
                {
                    "names": ["read"],
                    "action": "SCMP_ACT_ALLOW",
                    "args": [{"index": 0, "op": "SCMP_CMP_EQ", "value": 1.5}],
                }
            ),
            "seccomp: syscalls[0].args[0].value: expected an integer, got the number 1.5",
        ),
        (
            mini(
                {
                    "names": ["read"],
                    "action": "SCMP_ACT_ALLOW",
                    "args": [{"index": 0, "op": "SCMP_CMP_EQ", "vaule": 1}],
                }
            ),
            "seccomp: syscalls[0].args[0].vaule: unknown field (expected one of: index, value, valueTwo, op)",
        ),
        (
            mini({"names": ["read"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": "CAP_X"}}),
            "seccomp: syscalls[0].includes.caps: expected a list, got the string 'CAP_X'",
        ),
        (
            mini({"names": ["read"], "action": "SCMP_ACT_ALLOW", "excludes": {"arch": ["amd64"]}}),
            "seccomp: syscalls[0].excludes.arch: unknown field (expected one of: caps, arches, minKernel)",
        ),
        (
            mini({"names": ["read"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "5"}}),
            "seccomp: syscalls[0].includes.minKernel: '5' is not a kernel version like '5.8'",
        ),
        (
            mini({"names": ["read"], "action": "SCMP_ACT_ALLOW", "comment": 3}),
            "seccomp: syscalls[0].comment: expected a string, got the number 3",
        ),
    ],
)
def test_errors_name_the_json_path(doc: object, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        seccomp.compile_profile(doc)  # type: ignore[arg-type]
    assert str(e.value) == message
    assert e.value.option == "seccomp"


def test_profile_error_carries_the_path_and_the_file(tmp_path: Path) -> None:
    f = tmp_path / "x.json"
    f.write_text(json.dumps(bad_op_profile()))
    with pytest.raises(seccomp.ProfileError) as e:
        seccomp.compile_profile(f)
    assert e.value.json_path == "syscalls[3].args[0].op"
    assert e.value.source == str(f)
    assert str(e.value).startswith("seccomp: syscalls[3].args[0].op: unknown operator 'SCMP_CMP_FOO'")
    assert str(e.value).endswith(f" (profile {f})")
    assert isinstance(e.value, ValueError)


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        (
            [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}, {"names": ["read"], "action": "SCMP_ACT_KILL"}],
            "seccomp: syscalls[1].names[0]: 'read' already has an unconditional rule with another action "
            "at syscalls[0].names[0]",
        ),
        (  # the bypass libseccomp would build silently: the deny would be dropped
            [
                {
                    "names": ["ioctl"],
                    "action": "SCMP_ACT_ERRNO",
                    "errnoRet": 13,
                    "args": [{"index": 1, "op": "SCMP_CMP_MASKED_EQ", "value": M32, "valueTwo": TIOCSTI}],
                },
                {"names": ["ioctl"], "action": "SCMP_ACT_ALLOW"},
            ],
            "seccomp: syscalls[1].names[0]: 'ioctl': an unconditional rule and a conditional one with "
            "different actions (here and at syscalls[0].names[0]): libseccomp would keep only the "
            "unconditional one; make both conditional, on disjoint conditions",
        ),
        (
            [
                {
                    "names": ["read"],
                    "action": "SCMP_ACT_ALLOW",
                    "args": [{"index": 0, "op": "SCMP_CMP_EQ", "value": 3}],
                },
                {
                    "names": ["read"],
                    "action": "SCMP_ACT_LOG",
                    "args": [{"index": 0, "op": "SCMP_CMP_EQ", "value": 3}],
                },
            ],
            "seccomp: syscalls[1].names[0]: 'read': these conditions already have another action",
        ),
    ],
)
def test_rules_libseccomp_would_get_wrong(rules: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        seccomp.compile_profile(mini(*rules))
    assert str(e.value) == message


def test_same_action_twice_is_fine() -> None:
    p = prog(mini(
        {"names": ["read"], "action": "SCMP_ACT_ALLOW"},
        {"names": ["read"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 0, "op": "SCMP_CMP_EQ", "value": 1}]},
    ))  # fmt: skip
    assert verdict(p, "read", 7) == ALLOW


def test_files(tmp_path: Path) -> None:
    f = tmp_path / "x.json"
    f.write_text("[]")
    with pytest.raises(ConfigError) as e:
        seccomp.compile_profile(f)
    assert str(e.value) == f"seccomp: expected an object, got a list (profile {f})"
    f.write_text("")
    with pytest.raises(ConfigError) as e:
        seccomp.compile_profile(f)
    assert str(e.value) == f"seccomp: {f}: not valid JSON: Expecting value (line 1 column 1)"
    f.write_text('{"defaultAction": "SCMP_ACT_ERRNO",\n "syscalls": [}')
    with pytest.raises(ConfigError, match=r"x\.json: not valid JSON: Expecting value \(line 2 column 15\)$"):
        seccomp.compile_profile(f)
    f.write_text('{"defaultAction": "SCMP_ACT_ERRNO", "defaultAction": "SCMP_ACT_ALLOW"}')
    with pytest.raises(
        ConfigError, match=r"not valid JSON: the key 'defaultAction' appears twice in one object$"
    ):
        seccomp.compile_profile(f)
    f.write_text('{"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": NaN}')
    with pytest.raises(ConfigError, match="not valid JSON: NaN is not a JSON number"):
        seccomp.compile_profile(f)
    f.write_bytes(b'{"defaultAction": "\xff"}')
    with pytest.raises(ConfigError, match=r"x\.json: not valid UTF-8 \(byte 19\)$"):
        seccomp.compile_profile(f)
    missing = tmp_path / "nope.json"
    with pytest.raises(ConfigError) as e:
        seccomp.compile_profile(missing)
    assert str(e.value) == (
        f"seccomp: {missing}: no such profile file; pass 'default' or 'judge' for a built-in profile, "
        "None for no filter, or the path of a Docker-format JSON profile"
    )
    with pytest.raises(ConfigError, match="defualt: no such profile file; pass 'default' or 'judge'"):
        seccomp.compile_profile("defualt")
    with pytest.raises(ConfigError, match="not a regular file"):
        seccomp.compile_profile(tmp_path)
    with pytest.raises(ConfigError, match="expected a profile name, a path or a dict, got int"):
        seccomp.compile_profile(3)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="the profile dict is not JSON data"):
        seccomp.compile_profile({"defaultAction": {1, 2}})


def test_option_types() -> None:
    with pytest.raises(ConfigError, match="log: expected True or False"):
        seccomp.compile_profile("default", log=1)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="cap_add: expected a list of capability names"):
        seccomp.compile_profile("default", cap_add="CAP_SYS_ADMIN")
    with pytest.raises(ConfigError, match="cap_add: expected capability names"):
        seccomp.compile_profile("default", cap_add=[3])  # type: ignore[list-item]
    assert prog("default", cap_add=["sys_ptrace"]) == prog("default", cap_add=("CAP_SYS_PTRACE",))


def test_too_long_a_program() -> None:
    # libseccomp shares identical chains: give each syscall its own values
    rules = [
        {"names": [n], "action": "SCMP_ACT_ALLOW", "args": [
            {"index": 0, "op": "SCMP_CMP_EQ", "value": v + 10000 * i} for v in range(1500)
        ]}
        for i, n in enumerate(("read", "write", "close"))
    ]  # fmt: skip
    with pytest.raises(
        seccomp.ProfileError, match=r"compiles to \d+ BPF instructions; the kernel takes at most"
    ):
        seccomp.compile_profile(mini(*rules))


# -- caches ---------------------------------------------------------------------------


def cache_files(home: Path) -> list[Path]:
    d = home / "cache" / "seccomp"
    return sorted(d.iterdir()) if d.is_dir() else []


def test_memory_cache() -> None:
    a = prog("default")
    assert prog("default") is a
    assert prog(seccomp.profile_path("default")) is a
    assert prog(builtin("default")) is a  # same content, same key
    assert prog("default", log=True) is not a


def test_disk_cache_written_atomically(home: Path) -> None:
    a = prog("default")
    files = cache_files(home)
    assert len(files) == 1 and files[0].suffix == ".bpf" and len(files[0].stem) == 64
    assert files[0].read_bytes() == a
    assert stat.S_IMODE(os.stat(files[0].parent).st_mode) == 0o700
    prog("default", log=True)
    prog("judge")
    prog("default", cap_add=["CAP_SYS_PTRACE"])
    names = [f.name for f in cache_files(home)]
    assert len(names) == 4 and not [n for n in names if n.startswith(".tmp")]


def test_disk_cache_is_read(home: Path) -> None:
    a = prog("judge")
    (f,) = cache_files(home)
    planted = prog("default")  # a valid program under judge's key: proves the read
    f.write_bytes(planted)
    seccomp.clear_memory_cache()
    assert prog("judge") == planted
    f.unlink()
    assert prog("judge") == planted  # the memory cache answers now
    seccomp.clear_memory_cache()
    assert prog("judge") == a
    assert f.read_bytes() == a


@pytest.mark.parametrize(
    "junk",
    [b"", b"x" * 13, b"\0" * 64, b"\x20\0\0\0\x04\0\0\0" + b"\0" * 8, b"\x06\0\0\0\0\0\xff\x7f" * 4097],
    ids=["empty", "odd length", "zeros", "no return at the end", "too long"],
)
def test_corrupt_cache_file_is_ignored_and_rewritten(home: Path, junk: bytes) -> None:
    a = prog("default")
    (f,) = cache_files(home)
    f.write_bytes(junk)
    seccomp.clear_memory_cache()
    assert prog("default") == a
    assert f.read_bytes() == a


def test_cache_not_trusted_when_others_can_write(home: Path) -> None:
    a = prog("default")
    (f,) = cache_files(home)
    f.write_bytes(prog("judge"))
    f.chmod(0o666)
    seccomp.clear_memory_cache()
    assert prog("default") == a  # the world-writable file is not used...
    assert f.read_bytes() == a and stat.S_IMODE(f.stat().st_mode) == 0o600  # ...but replaced
    f.write_bytes(prog("judge"))
    f.parent.chmod(0o777)
    seccomp.clear_memory_cache()
    assert prog("default") == a  # a directory others can write: no disk cache at all
    assert f.read_bytes() == prog("judge")
    f.parent.chmod(0o700)


def test_unwritable_cache_dir_leaves_the_memory_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("SANDBOX_HOME", str(blocker))
    a = prog("default")
    assert prog("default") is a


def test_edited_profile_file_is_recompiled(tmp_path: Path) -> None:
    f = tmp_path / "p.json"
    f.write_text(json.dumps(mini({"names": ["read"], "action": "SCMP_ACT_ALLOW"})))
    a = prog(f)
    assert prog(f) is a
    f.write_text(json.dumps(mini({"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"})))
    b = prog(f)
    assert b != a and verdict(b, "write") == ALLOW and verdict(a, "write") == EPERM


def test_cache_key_covers_the_inputs() -> None:
    c = seccomp._canonical({"defaultAction": "SCMP_ACT_ALLOW"})
    keys = {
        seccomp._cache_key(c, False, ()),
        seccomp._cache_key(c, True, ()),
        seccomp._cache_key(c, False, ("CAP_SYS_ADMIN",)),
        seccomp._cache_key(seccomp._canonical({"defaultAction": "SCMP_ACT_LOG"}), False, ()),
    }
    assert len(keys) == 4
    assert seccomp._cache_key(c, False, ()) == seccomp._cache_key(c, False, ())
