"""Who and where a sandboxed process is: user namespace mapped onto an
unprivileged host range, PID 1 is the sandbox init, only the sandbox's
processes are visible, its own hostname, and the rootfs appears with its
real ownership (idmapped) while the host copy is never written."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from sandbox import Sandbox
from tests import leakcheck
from tests.conftest import sh_ok

pytestmark = pytest.mark.integration


def test_uid_map_is_an_unprivileged_host_range(sb) -> None:
    lines = sh_ok(sb, "cat /proc/self/uid_map").split("\n")
    rows = [line.split() for line in lines if line.strip()]
    assert len(rows) == 1, rows
    inside, host, count = map(int, rows[0])
    assert inside == 0
    assert host != 0, "container root is host root"
    assert host != os.getuid() and not host <= os.getuid() < host + count, "the caller's uid is mapped"
    assert count >= 65536
    gid_rows = [r.split() for r in sh_ok(sb, "cat /proc/self/gid_map").splitlines() if r.strip()]
    assert gid_rows and int(gid_rows[0][1]) != 0 and int(gid_rows[0][1]) != os.getgid()


def test_host_sees_an_unprivileged_uid(sb) -> None:
    p = sb.spawn(["sleep", "100"])
    try:
        members = leakcheck.pidns_members(os.readlink(f"/proc/{sb.pid}/ns/pid"))
        assert len(members) >= 2  # the init and the sleep
        for m in members:
            status = Path(f"/proc/{m.pid}/status").read_text()
            for key in ("Uid:", "Gid:"):
                ids = [int(x) for x in status.split(key)[1].split("\n")[0].split()]
                assert 0 not in ids, (m.describe(), key, ids)
                assert os.getuid() not in ids and os.getgid() not in ids, (m.describe(), key, ids)
    finally:
        p.kill()
        p.wait()


def test_id_is_root_inside(sb) -> None:
    assert sh_ok(sb, "id -u; id -g").split() == ["0", "0"]


def test_init_is_pid_1(sb) -> None:
    cmdline = sb.files.read_bytes("/proc/1/cmdline")
    assert cmdline.split(b"\0")[0] == b"sandbox-init"
    # the init's executable is a sealed memfd, and a command (no capabilities)
    # may not even look at it: /proc/1/exe needs ptrace access to the init
    r = sb.exec(["sh", "-c", "readlink /proc/1/exe"])
    assert r.exit_code != 0 and r.stdout == b"", r
    assert b"memfd:sandbox-i" in sb.files.read_bytes("/proc/1/status")
    assert sh_ok(sb, "echo $$").strip() != "1"  # the command is not the init


def test_only_sandbox_processes_are_visible(sb) -> None:
    out = sh_ok(sb, "ls /proc; true")  # `; true`: sh stays, ls is its child
    pids = sorted(int(n) for n in out.split() if n.isdigit())
    assert 1 in pids
    assert len(pids) == 3, pids  # the init, sh, ls: nothing else
    assert max(pids) < 100
    host = os.getpid()
    if host > 100:
        assert host not in pids


def test_background_processes_are_visible_and_counted(sb) -> None:
    out = sh_ok(sb, "sleep 30 & sleep 30 & ls /proc; true")
    assert len([n for n in out.split() if n.isdigit()]) == 5  # init, sh, 2 sleeps, ls


def test_default_hostname(sb) -> None:
    assert sh_ok(sb, "hostname").strip() == "sandbox"
    assert sh_ok(sb, "cat /etc/hostname").strip() == "sandbox"
    assert sh_ok(sb, "echo $HOSTNAME").strip() == "sandbox"


def test_hostname_option(sandbox_host, busybox_rootfs) -> None:
    with Sandbox(rootfs=busybox_rootfs, hostname="judge-1") as sb:
        assert sh_ok(sb, "hostname").strip() == "judge-1"
        assert sh_ok(sb, "cat /etc/hostname").strip() == "judge-1"
        assert "judge-1" in sh_ok(sb, "cat /etc/hosts")
        assert sh_ok(sb, "cat /proc/sys/kernel/hostname").strip() == "judge-1"
    assert os.uname().nodename != "judge-1"


def test_hostname_change_inside_stays_inside(sandbox_host, busybox_rootfs) -> None:
    before = os.uname().nodename
    # sethostname needs CAP_SYS_ADMIN over the sandbox's UTS namespace: opt in
    with Sandbox(rootfs=busybox_rootfs, cap_add=["CAP_SYS_ADMIN"]) as sb:
        sh_ok(sb, "hostname changed-inside")
        assert sh_ok(sb, "hostname").strip() == "changed-inside"
    assert os.uname().nodename == before


def test_hostname_cannot_change_without_capabilities(sb) -> None:
    r = sb.exec(["hostname", "changed"])
    assert r.exit_code != 0 and b"not permitted" in r.stderr
    assert sh_ok(sb, "hostname").strip() == "sandbox"


def test_rootfs_ownership_inside_and_on_host(sb, busybox_rootfs) -> None:
    host = os.lstat(busybox_rootfs / "bin" / "busybox")
    assert (host.st_uid, host.st_gid) == (0, 0)  # the image is owned by real root
    out = sh_ok(sb, "stat -c '%u %g' /bin/busybox /etc/passwd /home/user")
    assert out.split("\n")[:3] == ["0 0", "0 0", "1000 1000"]
    assert os.stat(busybox_rootfs / "home" / "user").st_uid == 1000


def _digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_copy_up_leaves_the_host_copy_untouched(sandbox_host, busybox_rootfs) -> None:
    passwd = busybox_rootfs / "etc" / "passwd"
    before, st = _digest(passwd), os.stat(passwd)
    # chown and chmod of a file one does not own need CAP_CHOWN and CAP_FOWNER,
    # which no command holds unless asked for
    with Sandbox(rootfs=busybox_rootfs, cap_add=["CAP_CHOWN", "CAP_FOWNER"]) as sb:
        sh_ok(
            sb,
            "echo 'evil:x:0:0::/:/bin/sh' >> /etc/passwd && chown 1000:1000 /etc/passwd"
            " && chmod 600 /etc/passwd",
        )
        assert sh_ok(sb, "stat -c '%u %g %a' /etc/passwd").strip() == "1000 1000 600"
        # root without CAP_DAC_OVERRIDE cannot read a 0600 file of uid 1000 any more
        assert sb.files.read_text("/etc/passwd").count("evil:x:0:0") == 1
    after = os.stat(passwd)
    assert _digest(passwd) == before
    assert (after.st_uid, after.st_gid, after.st_mode, after.st_mtime_ns) == (
        st.st_uid,
        st.st_gid,
        st.st_mode,
        st.st_mtime_ns,
    )


def test_files_created_inside_are_not_on_the_host(sb, busybox_rootfs) -> None:
    name = f"created-inside-{os.getpid()}"
    sh_ok(sb, f"echo data > /{name} && mkdir /root/{name} && echo x > /etc/{name}")
    assert sh_ok(sb, f"cat /{name}").strip() == "data"
    for p in (busybox_rootfs / name, busybox_rootfs / "root" / name, busybox_rootfs / "etc" / name):
        assert not os.path.lexists(p), p


def test_removing_a_rootfs_file_inside_keeps_it_on_the_host(sb, busybox_rootfs) -> None:
    sh_ok(sb, "rm /bin/ls && test ! -e /bin/ls")
    assert os.path.lexists(busybox_rootfs / "bin" / "ls")
