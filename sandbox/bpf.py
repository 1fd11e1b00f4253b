"""Run a compiled seccomp program (classic BPF) in Python, to ask what it
answers for given syscalls: whether the sandbox's init may carry the filter
itself.

Why: loading a Docker-sized filter costs ~0.2 ms per execve here, about a
tenth of a sandbox's whole start.  When the init loads it once, at the end
of its setup, every exec inherits it at no cost.  That is only right when
the filter allows every syscall the init and an exec's child make before
its execve (INIT_SYSCALLS, with their arguments); otherwise each exec loads
it last before execve, as before.  A filter is never weakened by this: the
init and the setup of each exec run under it too.

The evaluator covers what libseccomp emits (loads of seccomp_data words,
ALU and jumps on constants, the scratch memory, returns); any other opcode
makes the answer "no", which keeps the per-exec load.
"""

from __future__ import annotations

import errno
import platform
import struct
from functools import lru_cache

from . import capabilities

SECCOMP_RET_ACTION_FULL = 0xFFFF0000
SECCOMP_RET_ALLOW = 0x7FFF0000

AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}

# The init's own syscalls once its setup is done (the control loop, kill,
# the file requests, taking notifications), and those of an exec's child
# before execve, with the arguments the C code passes (sandbox/_cext/init.c);
# None is "any".  It must be complete: a call the filter turned into a
# notification would wait for the init itself.
_PR_SET_KEEPCAPS, _PR_CAPBSET_DROP, _PR_SET_NO_NEW_PRIVS, _PR_CAP_AMBIENT = 8, 24, 38, 47
_CLONE_VM_FLAGS = 0x200111  # CLONE_VM | CLONE_CHILD_CLEARTID | SIGCHLD (rt_clone_vm)
_P_PID, _WSTOPPED_WNOHANG = 1, 3
_TIOCSCTTY = 0x540E
INIT_SYSCALLS: tuple[tuple[str, tuple[int | None, ...]], ...] = (
    ("read", ()),
    ("write", ()),
    ("close", ()),
    ("close_range", ()),
    ("openat", ()),
    ("openat2", ()),
    ("fstat", ()),
    ("fcntl", ()),
    ("getdents64", ()),
    ("mkdirat", ()),
    ("fchown", ()),
    ("fchownat", ()),
    ("recvmsg", ()),
    ("recvfrom", ()),
    ("sendmsg", ()),
    ("sendto", ()),
    ("ppoll", ()),
    ("wait4", ()),
    ("kill", ()),
    ("pidfd_open", ()),
    ("pidfd_send_signal", ()),
    ("clock_gettime", ()),
    ("rt_sigprocmask", ()),
    ("rt_sigaction", ()),
    ("signalfd4", ()),
    ("ioctl", (0, 0xC0502100)),  # SECCOMP_IOCTL_NOTIF_RECV, on the listener (the fd is not known here)
    ("clone", (_CLONE_VM_FLAGS, 0, 0, 0, 0)),
    ("futex", (None, 0)),  # FUTEX_WAIT on the child's tid word, until its execve
    ("waitid", (_P_PID, None, None, _WSTOPPED_WNOHANG, 0)),  # a child stopped before it
    ("sched_yield", ()),  # before an exec's fork
    ("pread64", ()),  # /proc/loadavg, before that yield
    ("fstatfs", ()),  # a file opened for the host: on procfs, sysfs or a cgroup fs?
    ("readlinkat", ()),  # and on procfs: one of the init's own /proc/<pid>/?
    ("exit", ()),
    ("exit_group", ()),
    # an exec's child, between its clone and its execve
    ("setsid", ()),
    ("dup3", ()),
    ("ioctl", (0, _TIOCSCTTY, 0)),
    ("umask", ()),
    ("prlimit64", (0,)),
    ("prctl", (_PR_CAPBSET_DROP,)),
    ("prctl", (_PR_SET_KEEPCAPS, 1)),
    ("prctl", (_PR_CAP_AMBIENT, 4)),  # PR_CAP_AMBIENT_CLEAR_ALL
    ("prctl", (_PR_CAP_AMBIENT, 2)),  # PR_CAP_AMBIENT_RAISE
    ("prctl", (_PR_SET_NO_NEW_PRIVS, 1)),
    ("setgroups", ()),
    ("setresgid", ()),
    ("setresuid", ()),
    ("capset", ()),
    ("chdir", ()),
    ("execve", ()),
    ("nanosleep", ()),  # between retries of an execve that met ETXTBSY
)
# Made only where the sandbox keeps CAP_SYS_ADMIN, and so required only
# there: the init then looks its own /proc files up in a detached copy of
# /proc, where no mount of the sandbox's covers them.  Docker's profile
# allows open_tree only with CAP_SYS_ADMIN: requiring it always would make
# every other sandbox load its filter per exec.
INIT_SYSCALLS_SYS_ADMIN: tuple[tuple[str, tuple[int | None, ...]], ...] = (("open_tree", ()),)


class Unsupported(Exception):
    pass


def run(prog: bytes, nr: int, arch: int, args: tuple[int, ...] = (), ip: int = 0) -> int:
    """The program's answer (SECCOMP_RET_*) for one syscall."""
    a6 = (list(args) + [0] * 6)[:6]
    data = struct.pack("=iIQ6Q", nr, arch, ip, *a6)
    insns = [struct.unpack_from("=HBBI", prog, off) for off in range(0, len(prog), 8)]
    acc = x = 0
    mem = [0] * 16
    pc = 0
    for _ in range(len(insns) + 1):  # classic BPF only jumps forward
        if pc >= len(insns):
            break
        code, jt, jf, k = insns[pc]
        pc += 1
        cls = code & 0x07
        if cls == 0x00:  # BPF_LD
            if code == 0x20:  # LD W ABS
                if k % 4 or k + 4 > len(data):
                    raise Unsupported(f"load at {k}")
                acc = struct.unpack_from("=I", data, k)[0]
            elif code == 0x00:  # LD IMM
                acc = k
            elif code == 0x60:  # LD MEM
                acc = mem[k & 15]
            else:
                raise Unsupported(f"ld {code:#x}")
        elif cls == 0x01:  # BPF_LDX
            if code == 0x01:
                x = k
            elif code == 0x61:
                x = mem[k & 15]
            else:
                raise Unsupported(f"ldx {code:#x}")
        elif cls == 0x02:  # BPF_ST
            mem[k & 15] = acc
        elif cls == 0x03:  # BPF_STX
            mem[k & 15] = x
        elif cls == 0x04:  # BPF_ALU
            src = x if code & 0x08 else k
            op = code & 0xF0
            if op == 0x00:
                acc = (acc + src) & 0xFFFFFFFF
            elif op == 0x10:
                acc = (acc - src) & 0xFFFFFFFF
            elif op == 0x50:
                acc &= src
            elif op == 0x40:
                acc |= src
            elif op == 0xA0:
                acc ^= src
            elif op == 0x60:
                acc = (acc << src) & 0xFFFFFFFF
            elif op == 0x70:
                acc >>= src
            elif op == 0x80:
                acc = (-acc) & 0xFFFFFFFF
            else:
                raise Unsupported(f"alu {code:#x}")
        elif cls == 0x05:  # BPF_JMP
            op = code & 0xF0
            src = x if code & 0x08 else k
            if op == 0x00:  # JA
                pc += k
                continue
            if op == 0x10:
                cond = acc == src
            elif op == 0x20:
                cond = acc > src
            elif op == 0x30:
                cond = acc >= src
            elif op == 0x40:
                cond = bool(acc & src)
            else:
                raise Unsupported(f"jmp {code:#x}")
            pc += jt if cond else jf
        elif cls == 0x06:  # BPF_RET
            return acc if code & 0x10 else k
        elif cls == 0x07:  # BPF_MISC
            if code == 0x07:
                x = acc
            elif code == 0x87:
                acc = x
            else:
                raise Unsupported(f"misc {code:#x}")
    raise Unsupported("no return")


SECCOMP_RET_USER_NOTIF = 0x7FC00000
_KILLS = (0x80000000, 0x00000000)  # SECCOMP_RET_KILL_PROCESS, SECCOMP_RET_KILL_THREAD


@lru_cache(maxsize=64)
def kills_as_notifications(prog: bytes) -> bytes | None:
    """The program with each of its kill actions (RET K) turned into a user
    notification, for an init that carries it: the init then learns which
    syscall it was before it kills the process.  None if it has no kill."""
    out = bytearray(prog)
    found = False
    for off in range(0, len(prog), 8):
        code, _, _, k = struct.unpack_from("=HBBI", prog, off)
        if code == 0x06 and k in _KILLS:
            struct.pack_into("=I", out, off + 4, SECCOMP_RET_USER_NOTIF)
            found = True
    return bytes(out) if found else None


@lru_cache(maxsize=64)
def init_can_carry(prog: bytes, caps: int = 0) -> bool:
    """Whether every syscall of INIT_SYSCALLS is allowed by the program (on
    this machine's architecture), so that the init may load it for all;
    `caps` is the bounding set the init keeps (Spec.caps), and with
    CAP_SYS_ADMIN in it, INIT_SYSCALLS_SYS_ADMIN must be allowed too."""
    arch = AUDIT_ARCH.get(platform.machine())
    if arch is None:
        return False
    from .seccomp import syscall_number

    needed = INIT_SYSCALLS
    if caps & (1 << capabilities.NUMBERS["CAP_SYS_ADMIN"]):
        needed += INIT_SYSCALLS_SYS_ADMIN
    try:
        for name, args in needed:
            nr = syscall_number(name)
            if nr is None:
                return False
            ret = run(prog, nr, arch, tuple(a or 0 for a in args))
            if ret & SECCOMP_RET_ACTION_FULL != SECCOMP_RET_ALLOW:
                return False
    except (Unsupported, struct.error):
        return False
    return True


def denies(prog: bytes, name: str, args: tuple[int, ...] = ()) -> int | None:
    """The errno the program answers for a syscall, None when it allows it
    (for tests and for `sandbox doctor`)."""
    from .seccomp import syscall_number

    arch = AUDIT_ARCH[platform.machine()]
    nr = syscall_number(name)
    if nr is None:
        return errno.ENOSYS
    ret = run(prog, nr, arch, args)
    if ret & SECCOMP_RET_ACTION_FULL == SECCOMP_RET_ALLOW:
        return None
    return ret & 0xFFFF
