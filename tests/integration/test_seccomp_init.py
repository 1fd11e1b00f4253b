"""Where the filter is loaded: on the init itself, once, when the profile
allows every syscall the init makes (sandbox/bpf.py decides), so that execs
inherit it; per exec, last before execve, otherwise.  Either way every
exec runs under it."""

from __future__ import annotations

import errno
import signal

import pytest

from sandbox import FileOpError, Sandbox
from tests.conftest import sh_ok

PROFILE_DENYING_WHAT_THE_INIT_USES = {
    "defaultAction": "SCMP_ACT_ALLOW",
    "syscalls": [{"names": ["pidfd_send_signal"], "action": "SCMP_ACT_ERRNO"}],
}


def _seccomp_of(sb: Sandbox, pid: str) -> str:
    r = sb.exec(["sh", "-c", f"grep ^Seccomp: /proc/{pid}/status"])
    assert r.ok, r.stderr
    return r.stdout_text.split()[1]


def test_the_default_profile_is_carried_by_the_init(sandbox_host, busybox_rootfs) -> None:
    with Sandbox(rootfs=busybox_rootfs) as sb:
        assert _seccomp_of(sb, "1") == "2"
        assert _seccomp_of(sb, "self") == "2"
        r = sb.exec(["unshare", "-U", "true"])
        assert r.exit_code != 0 and b"Operation not permitted" in r.stderr


def test_a_profile_that_denies_the_inits_syscalls_is_loaded_per_exec(sandbox_host, busybox_rootfs) -> None:
    with Sandbox(rootfs=busybox_rootfs, seccomp=PROFILE_DENYING_WHAT_THE_INIT_USES) as sb:
        assert _seccomp_of(sb, "1") == "0"  # the init runs without it...
        assert _seccomp_of(sb, "self") == "2"  # ...each exec loads it
        # and the init still does what needs the denied call: killing a command
        p = sb.spawn(["sleep", "100"])
        p.kill()
        assert p.wait().reason == "signaled"


def test_no_profile_no_filter(sandbox_host, busybox_rootfs) -> None:
    with Sandbox(rootfs=busybox_rootfs, seccomp=None) as sb:
        assert _seccomp_of(sb, "1") == "0"
        assert _seccomp_of(sb, "self") == "0"


KILL_SYNC = {
    "defaultAction": "SCMP_ACT_ALLOW",
    "syscalls": [{"names": ["sync"], "action": "SCMP_ACT_KILL_PROCESS"}],
}


def test_a_kill_action_names_the_syscall(sandbox_host, busybox_rootfs) -> None:
    """A carried filter's kill actions come to the init as notifications: it
    notes the syscall for the verdict and kills the process with SIGSYS."""
    with Sandbox(rootfs=busybox_rootfs, seccomp=KILL_SYNC) as sb:
        r = sb.exec(["sync"])
        assert (r.reason, r.signal, r.syscall) == ("seccomp", signal.SIGSYS, "sync")
        assert "sync" in r.describe()
        # a process of the command's that is stopped: the command's verdict too
        r = sb.exec(["sh", "-c", "sync; echo status=$?"])
        assert r.stdout == b"status=159\n"  # 128 + SIGSYS, as the shell saw it
        assert (r.reason, r.syscall) == ("seccomp", "sync")
        # ignoring SIGSYS does not let the call through: SIGKILL then
        r = sb.exec(["sh", "-c", "trap '' SYS; sync; echo status=$?"])
        assert r.stdout == b"status=137\n"
        assert (r.reason, r.syscall) == ("seccomp", "sync")
        ok = sb.exec(["sh", "-c", "echo fine"])
        assert (ok.reason, ok.syscall, ok.stdout) == ("exited", None, b"fine\n")


def test_a_kill_action_of_a_filter_loaded_per_exec_has_no_name(sandbox_host, busybox_rootfs) -> None:
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        # mkdirat is the init's (files.mkdir): this filter stays per exec
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_KILL_PROCESS"}],
    }
    with Sandbox(rootfs=busybox_rootfs, seccomp=profile) as sb:
        r = sb.exec(["mkdir", "/tmp/x"])
        assert (r.reason, r.signal, r.syscall) == ("seccomp", signal.SIGSYS, None)


@pytest.mark.parametrize("name", ["fstatfs", "readlinkat"])
def test_a_profile_that_kills_what_the_files_checks_use_is_loaded_per_exec(
    sandbox_host, busybox_rootfs, name: str
) -> None:
    """The init checks each file it opens for the host with fstatfs and, on
    procfs, readlinkat.  Carried by the init, a profile that kills either
    would hand the init a notification of its own call, to wait on for
    ever: such a profile is loaded per exec, and the checks still refuse."""
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": [name], "action": "SCMP_ACT_KILL_PROCESS"}],
    }
    with Sandbox(rootfs=busybox_rootfs, seccomp=profile) as sb:
        assert _seccomp_of(sb, "1") == "0"
        assert _seccomp_of(sb, "self") == "2"
        sh_ok(sb, "echo ok > /tmp/f; ln -s /proc/self /tmp/outdir")
        assert sb.files.read_bytes("/tmp/f") == b"ok\n"
        assert b"processor" in sb.files.read_bytes("/proc/cpuinfo")
        with pytest.raises(FileOpError) as e:
            sb.files.read_bytes("/tmp/outdir/maps")
        assert e.value.errno == errno.EACCES


def test_open_tree_is_needed_only_where_the_sandbox_keeps_cap_sys_admin(sandbox_host, busybox_rootfs) -> None:
    """With CAP_SYS_ADMIN the init looks its own /proc files up in a copy of
    /proc made with open_tree, which the judge profile denies even then: the
    init leaves that profile to each exec.  The default profile allows
    open_tree with CAP_SYS_ADMIN (and only then), and stays the init's."""
    with Sandbox(rootfs=busybox_rootfs, seccomp="judge", cap_add=["SYS_ADMIN"]) as sb:
        assert _seccomp_of(sb, "1") == "0"
        assert b"processor" in sb.files.read_bytes("/proc/cpuinfo")
    for cap_add in ([], ["SYS_ADMIN"]):
        with Sandbox(rootfs=busybox_rootfs, cap_add=cap_add) as sb:
            assert _seccomp_of(sb, "1") == "2", cap_add
            assert b"processor" in sb.files.read_bytes("/proc/cpuinfo")
