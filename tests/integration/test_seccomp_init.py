"""Where the filter is loaded: on the init itself, once, when the profile
allows every syscall the init makes (sandbox/bpf.py decides), so that execs
inherit it; per exec, last before execve, otherwise.  Either way every
exec runs under it."""

from __future__ import annotations

from sandbox import Sandbox

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
