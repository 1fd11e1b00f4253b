"""What must not reach a sandbox: host files outside the rootfs, the host
process's open fds, its environment."""

from __future__ import annotations

import errno
import fcntl
import os
import tempfile
import uuid
from pathlib import Path

import pytest

from sandbox import FileOpError, Sandbox
from tests.conftest import sh, sh_ok

pytestmark = pytest.mark.integration


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    """A host file with a unique name and content, world-readable."""
    name = f"host-marker-{uuid.uuid4().hex}"
    p = tmp_path / name
    p.write_text("HOST-SECRET-" + name)
    p.chmod(0o644)
    for d in p.parents:  # no permission excuse: only isolation may hide it
        if d == Path(tempfile.gettempdir()) or d == Path("/"):
            break
        d.chmod(d.stat().st_mode | 0o055)
    return p


def test_host_file_is_unreachable(sandbox_host, busybox_rootfs, marker: Path) -> None:
    with Sandbox(rootfs=busybox_rootfs) as sb:
        r = sh(sb, f"cat {marker}")
        assert r.exit_code != 0
        assert b"HOST-SECRET" not in r.stdout
        r = sh(
            sb,
            f"find / -name {marker.name} 2>/dev/null; "
            "grep -rl HOST-SECRET- /tmp /etc /root 2>/dev/null; true",
        )
        assert marker.name not in r.stdout_text
        assert sb.files.read_bytes(str(marker), missing_ok=True) is None


def test_host_root_is_unreachable_through_proc(sb) -> None:
    # A command may not look through the init's /proc entries at all (no
    # capabilities, no ptrace access to PID 1) ...
    r = sb.exec(["sh", "-c", "readlink /proc/1/root; ls /proc/1/root/"])
    assert r.exit_code != 0 and r.stdout == b"", r
    # ... nor does the init follow that magic link for the host (it would
    # open what it holds itself) ...
    with pytest.raises(FileOpError) as e:
        sb.files.list("/proc/1/root/etc")
    assert e.value.errno == errno.ELOOP
    # ... and the sandbox's root is not the host's.
    host_etc = set(os.listdir("/etc"))
    inside_etc = set(sb.files.list("/etc"))
    assert inside_etc != host_etc
    assert "os-release" not in inside_etc  # busybox has none; the host does
    assert os.path.exists("/etc/os-release")


def test_no_host_mounts_visible(sb) -> None:
    inside = sh_ok(sb, "cat /proc/self/mountinfo")
    # The sandbox's root is its overlay; nothing of the host's tree shows.
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mnt = line.split()[4]
        if mnt not in (
            "/",
            "/proc",
            "/dev",
            "/tmp",
            "/dev/pts",
            "/dev/shm",
            "/dev/mqueue",
            "/sys",
            "/etc/hostname",
            "/etc/hosts",
            "/dev/null",
            "/dev/zero",
            "/dev/full",
            "/dev/random",
            "/dev/urandom",
            "/dev/tty",
        ):
            assert f" {mnt} " not in inside, f"host mount point {mnt} visible inside"


def test_no_fd_above_2_reaches_a_command(sb) -> None:
    out = sh_ok(sb, "ls /proc/$$/fd; true")
    assert sorted(out.split()) == ["0", "1", "2"]


def test_host_inheritable_fds_do_not_reach_the_sandbox(sandbox_host, busybox_rootfs, marker: Path) -> None:
    """Even fds the host process left inheritable (no O_CLOEXEC), low and
    high, reach neither the init nor the commands."""
    fds = [os.open(marker, os.O_RDONLY) for _ in range(3)]
    # the lowest free number from 200 on: a dup2 onto 200 would close what
    # is there (after the concurrency tests, a cached idmapping user
    # namespace of sandbox/_core.py, whose range then failed every launch)
    high = fcntl.fcntl(fds[0], fcntl.F_DUPFD, 200)
    for fd in [*fds, high]:
        os.set_inheritable(fd, True)
    try:
        with Sandbox(rootfs=busybox_rootfs) as sb:
            assert sorted(sh_ok(sb, "ls /proc/$$/fd; true").split()) == ["0", "1", "2"]
            init_fds = sh_ok(sb, "ls -l /proc/1/fd")
            assert marker.name not in init_fds
            for fd in [*fds, high]:
                r = sb.exec(["cat", f"/proc/self/fd/{fd}"])
                assert b"HOST-SECRET" not in r.stdout
            # What the init holds: /dev/null on 0-2, its control socket, its
            # signalfd, and reply sockets of requests in flight.
            for line in init_fds.splitlines():
                if "->" in line:
                    target = line.split("->", 1)[1].strip()
                    assert target.startswith(("socket:", "anon_inode:", "/dev/null", "/null", "pipe:")), line
    finally:
        for fd in [*fds, high]:
            os.close(fd)


def test_no_host_environment_reaches_a_command(
    sandbox_host, busybox_rootfs, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = f"sekrit-{uuid.uuid4().hex}"
    monkeypatch.setenv("SANDBOX_TEST_SECRET", secret)
    with Sandbox(rootfs=busybox_rootfs) as sb:
        env = sh_ok(sb, "env")
        assert "SANDBOX_TEST_SECRET" not in env and secret not in env
        names = {line.split("=", 1)[0] for line in env.splitlines() if "=" in line}
        assert names <= {"PATH", "HOSTNAME", "HOME", "PWD", "SHLVL", "_"}, names
        assert sb.files.read_bytes("/proc/1/environ") == b""
        assert sh_ok(sb, "cat /proc/1/environ | wc -c").strip() == "0"
        # Not in any process of the sandbox, either.
        assert secret not in sh_ok(sb, "cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n'; true")


def test_sandbox_env_is_built_from_scratch(sandbox_host, busybox_rootfs) -> None:
    with Sandbox(rootfs=busybox_rootfs, env={"A": "from-spec", "B": "b"}) as sb:
        r = sb.exec(["env"], env={"A": "from-exec"})
        lines = set(r.stdout_text.splitlines())
        assert {"A=from-exec", "B=b", "HOSTNAME=sandbox", "HOME=/root"} <= lines
        assert any(x.startswith("PATH=") for x in lines)
        assert len(lines) == 5, lines


def test_net_namespace_has_only_loopback(sb) -> None:
    links = sh_ok(sb, "ls /sys/class/net 2>/dev/null || cat /proc/net/dev").split()
    assert "eth0" not in " ".join(links)
    assert "lo" in " ".join(links)
