"""The classic-BPF evaluator that decides whether the init may carry a
seccomp filter for its execs (sandbox/bpf.py): hand-made programs, and the
compiled policies against what they are meant to deny."""

from __future__ import annotations

import errno
import platform
import struct

import pytest

from sandbox import bpf, capabilities, seccomp

ARCH = bpf.AUDIT_ARCH[platform.machine()]
ALLOW = bpf.SECCOMP_RET_ALLOW
ERRNO = 0x00050000
KILL = 0x80000000


def insn(code: int, k: int = 0, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def nr(name: str) -> int:
    n = seccomp.syscall_number(name)
    assert n is not None
    return n


def deny_one(name: str, err: int = errno.EPERM) -> bytes:
    """if nr == NAME: ERRNO(err) else ALLOW"""
    return (
        insn(0x20, 0)  # ld [nr]
        + insn(0x15, nr(name), 0, 1)  # jeq NAME
        + insn(0x06, ERRNO | err)
        + insn(0x06, ALLOW)
    )


def test_a_hand_made_program() -> None:
    prog = deny_one("getpid", errno.EACCES)
    assert bpf.run(prog, nr("getpid"), ARCH) == ERRNO | errno.EACCES
    assert bpf.run(prog, nr("getppid"), ARCH) == ALLOW
    assert bpf.denies(prog, "getpid") == errno.EACCES
    assert bpf.denies(prog, "getppid") is None


def test_arguments_and_the_alu() -> None:
    # deny when (args[0] & 0x10000000) != 0, i.e. clone with CLONE_NEWUSER
    prog = (
        insn(0x20, 16)  # ld [args[0] low]
        + insn(0x54, 0x10000000)  # and #
        + insn(0x15, 0, 0, 1)  # jeq #0 -> allow, else deny
        + insn(0x06, ALLOW)
        + insn(0x06, ERRNO | errno.EPERM)
    )
    assert bpf.run(prog, nr("clone"), ARCH, (0x4111,)) == ALLOW
    assert bpf.run(prog, nr("clone"), ARCH, (0x10000000,)) == ERRNO | errno.EPERM


def test_an_unknown_opcode_is_never_guessed() -> None:
    prog = insn(0xFF) + insn(0x06, ALLOW)
    with pytest.raises(bpf.Unsupported):
        bpf.run(prog, 0, ARCH)
    assert bpf.init_can_carry(prog) is False


def test_a_filter_that_denies_what_the_init_needs_stays_per_exec() -> None:
    assert bpf.init_can_carry(insn(0x06, ALLOW)) is True
    needed = ("wait4", "recvmsg", "setresuid", "execve", "sched_yield", "pread64", "fstatfs", "readlinkat")
    for name in needed:
        assert bpf.init_can_carry(deny_one(name)) is False, name


def test_open_tree_is_needed_only_with_cap_sys_admin() -> None:
    sys_admin = 1 << capabilities.NUMBERS["CAP_SYS_ADMIN"]
    assert bpf.init_can_carry(deny_one("open_tree")) is True
    assert bpf.init_can_carry(deny_one("open_tree"), sys_admin) is False
    # the default profile allows open_tree with CAP_SYS_ADMIN, the judge profile never
    default = seccomp.compile_profile("default", cap_add=["SYS_ADMIN"])
    judge = seccomp.compile_profile("judge", cap_add=["SYS_ADMIN"])
    assert default is not None and judge is not None
    assert bpf.init_can_carry(default, sys_admin) is True
    assert bpf.init_can_carry(judge, sys_admin) is False


@pytest.mark.parametrize("profile", ["default", "judge"])
def test_the_policies_deny_what_they_say_and_the_init_can_carry_them(profile: str) -> None:
    prog = seccomp.compile_profile(profile)
    assert prog is not None
    assert bpf.init_can_carry(prog) is True
    for name in ("unshare", "setns", "mount", "bpf", "ptrace", "keyctl", "kexec_load", "reboot"):
        assert bpf.denies(prog, name) is not None, name
    assert bpf.denies(prog, "clone", (0x10000000,)) is not None  # CLONE_NEWUSER
    assert bpf.denies(prog, "getpid") is None
    # another architecture's calls are not allowed
    other = 0x40000003  # AUDIT_ARCH_I386
    assert bpf.run(prog, nr("getpid"), other) & bpf.SECCOMP_RET_ACTION_FULL != ALLOW


def test_a_log_profile_logs_instead_of_denying_and_can_be_carried() -> None:
    prog = seccomp.compile_profile("default", log=True)
    assert prog is not None
    # a call the profile neither allows nor denies by name: logged, not denied
    assert bpf.run(prog, nr("tuxcall"), ARCH) & bpf.SECCOMP_RET_ACTION_FULL == 0x7FFC0000  # SECCOMP_RET_LOG
    assert bpf.denies(prog, "unshare") == errno.EPERM  # named denials stay
    assert bpf.init_can_carry(prog) is True


def test_kill_actions_become_notifications() -> None:
    prog = (
        insn(0x20, 0)
        + insn(0x15, nr("sync"), 0, 1)
        + insn(0x06, KILL)  # kill process
        + insn(0x15, nr("syncfs"), 0, 1)
        + insn(0x06, 0)  # kill thread
        + insn(0x06, ALLOW)
    )
    out = bpf.kills_as_notifications(prog)
    assert out is not None and len(out) == len(prog)
    assert bpf.run(out, nr("sync"), ARCH) == bpf.SECCOMP_RET_USER_NOTIF
    assert bpf.run(out, nr("syncfs"), ARCH) == bpf.SECCOMP_RET_USER_NOTIF
    assert bpf.run(out, nr("getpid"), ARCH) == ALLOW
    assert bpf.kills_as_notifications(deny_one("sync")) is None  # no kill action: nothing to do
