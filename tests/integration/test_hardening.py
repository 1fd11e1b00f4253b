"""Secure by default (issue 5), asserted from inside by the probe
(tests/probe/probe.c): no capabilities, no_new_privs, a seccomp filter,
masked and read-only /proc, fd and environment hygiene, and escape attempts
that fail with an exact errno and leave the host as it was.

How to read the expectations: the default profile answers a refused syscall
with EPERM (clone3 with ENOSYS, so that libc falls back to clone).  Where
the kernel would refuse a call anyway for want of a capability it answers
EPERM too; the probe picks arguments for which the kernel's own answer
differs from EPERM where it can (an invalid time, an ioctl on /dev/null,
setns into one's own user namespace, ...), so that the filter is what is
tested.  `test_without_seccomp_the_kernel_answers_differently` is the
control: the same operations with seccomp=None reach the kernel.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import platform
import socket
import stat
from pathlib import Path
from typing import Any

import pytest

from sandbox import PIPE, ConfigError, Sandbox
from tests.conftest import require, sh, sh_ok
from tests.integration.conftest import PROBE_PATH, caps, errnos

pytestmark = pytest.mark.integration

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CAP_CHOWN = 0
CAP_NET_BIND_SERVICE = 10


@pytest.fixture(params=["busybox", "debian"])
def rootfs(request: pytest.FixtureRequest, sandbox_host: None) -> Path:
    return request.getfixturevalue(f"{request.param}_rootfs")


@pytest.fixture
def default_sb(rootfs: Path) -> Any:
    """A sandbox with every default: the default seccomp profile, no caps."""
    with Sandbox(rootfs=rootfs) as sb:
        yield sb


def mismatches(report: dict[str, Any], expected: dict[str, str | None]) -> dict[str, tuple[Any, Any]]:
    got = errnos(report)
    return {op: (got.get(op), want) for op, want in expected.items() if got.get(op) != want}


# -- what a command holds -------------------------------------------------------------


@pytest.mark.parametrize("user", [None, "1000:1000"])
def test_no_capabilities_no_new_privs_seccomp_filter(default_sb, probe, user) -> None:
    r = probe(default_sb, user=user)
    assert caps(r) == {"CapEff": 0, "CapPrm": 0, "CapBnd": 0, "CapAmb": 0, "CapInh": 0}, r["status"]
    assert r["status"]["NoNewPrivs"] == "1"
    assert r["status"]["Seccomp"] == "2"  # SECCOMP_MODE_FILTER
    assert r["status"]["Seccomp_filters"] == "1"
    want = [1000] * 3 if user else [0] * 3
    assert r["ids"]["uid"] == want and r["ids"]["gid"] == want


def test_spawned_processes_are_confined_too(default_sb, probe_binary) -> None:
    default_sb.files.write_bytes(PROBE_PATH, probe_binary, mode=0o755)
    p = default_sb.spawn([PROBE_PATH], stdin=PIPE, stdout=PIPE, stderr=PIPE)
    res = p.communicate(b"")
    assert res.exit_code == 0, res
    r = json.loads(res.stdout)
    assert caps(r)["CapEff"] == 0 and caps(r)["CapBnd"] == 0
    assert r["status"]["NoNewPrivs"] == "1" and r["status"]["Seccomp"] == "2"
    assert r["fds"] == [0, 1, 2], r["fd_targets"]


def test_capabilities_cannot_be_raised(default_sb, probe) -> None:
    r = probe(default_sb, "capset")
    assert errnos(r) == {"capset": "EPERM"}


# -- /proc and /sys ------------------------------------------------------------------

# Docker's masked files and the package's additions.  Absent ones (a kernel
# built without them) must be absent inside too, never something else.
MASKED_FILES = (
    "/proc/kcore", "/proc/keys", "/proc/key-users", "/proc/latency_stats", "/proc/timer_list",
    "/proc/timer_stats", "/proc/sched_debug", "/proc/sysrq-trigger", "/proc/kallsyms",
    "/proc/kpagecount", "/proc/kpageflags", "/proc/kpagecgroup", "/proc/vmallocinfo",
)  # fmt: skip
MASKED_DIRS = ("/proc/acpi", "/proc/scsi", "/proc/asound", "/proc/driver")
READ_ONLY = ("/proc/sys", "/proc/bus", "/proc/fs", "/proc/irq")


def test_masked_proc_files_read_empty(default_sb, probe) -> None:
    ops = [f"{kind}={p}" for p in MASKED_FILES for kind in ("stat", "read")]
    r = probe(default_sb, *ops)["ops"]
    present = [p for p in MASKED_FILES if os.path.exists(p)]
    assert "/proc/timer_list" in present or "/proc/kallsyms" in present  # the test tests something
    for p in MASKED_FILES:
        st, rd = r[f"stat={p}"], r[f"read={p}"]
        if p not in present:
            assert st["errno"] == "ENOENT", (p, st)
            continue
        # a bind of /dev/null: a character device 1:3 that reads empty
        assert st["errno"] is None and stat.S_ISCHR(st["mode"]) and st["rdev"] == [1, 3], (p, st)
        assert rd == {"ret": 0, "errno": None, "data": ""}, (p, rd)


def test_masked_proc_dirs_are_empty_and_read_only(default_sb, probe) -> None:
    present = [d for d in MASKED_DIRS if os.path.isdir(d)]
    ops = [f"ls={d}" for d in MASKED_DIRS] + [f"create={d}/x" for d in present]
    r = probe(default_sb, *ops)["ops"]
    for d in MASKED_DIRS:
        if d in present:
            assert r[f"ls={d}"] == {"ret": 0, "errno": None, "entries": []}, d
            assert r[f"create={d}/x"]["errno"] in ("EROFS", "EACCES"), (d, r[f"create={d}/x"])
        else:
            assert r[f"ls={d}"]["errno"] == "ENOENT", d


def test_proc_sys_is_read_only(default_sb, probe) -> None:
    # kernel.shmmax belongs to the sandbox's IPC namespace, whose root the
    # command is: the permission check passes and only the read-only mount
    # refuses.  core_pattern belongs to the host's root: refused before that.
    r = probe(
        default_sb,
        "open_wr=/proc/sys/kernel/shmmax",
        "open_wr=/proc/sys/kernel/core_pattern",
        "mount_setattr",  # clearing MOUNT_ATTR_RDONLY on /proc/sys
    )
    assert errnos(r) == {
        "open_wr=/proc/sys/kernel/shmmax": "EROFS",
        "open_wr=/proc/sys/kernel/core_pattern": "EACCES",
        "mount_setattr": "EPERM",
    }
    res = sh(default_sb, "echo 1 > /proc/sys/kernel/shmmax")
    assert res.exit_code != 0 and b"Read-only file system" in res.stderr, res.stderr
    mounts = sb_mounts(default_sb)
    for d in READ_ONLY:
        if os.path.isdir(d):
            assert d in mounts and "ro" in mounts[d][1].split(","), (d, mounts.get(d))


def test_read_only_proc_dirs_are_the_sandboxs_own_procfs(default_sb) -> None:
    # a bind of the sandbox's own /proc/sys, never of the host's procfs (with
    # whatever the host mounts under it, binfmt_misc for one)
    present = [d for d in READ_ONLY if os.path.isdir(d)]
    assert "/proc/sys" in present
    out = sh_ok(default_sb, "stat -c '%d %n' /proc " + " ".join(present)).split()
    devs = dict(zip(out[1::2], out[0::2], strict=True))
    assert {d: devs[d] for d in present} == {d: devs["/proc"] for d in present}, devs


def sb_mounts(sb: Any) -> dict[str, tuple[str, str]]:
    """{mount point: (fstype, options)}, the last mount on each point."""
    out = {}
    for line in sb.files.read_text("/proc/self/mounts").splitlines():
        f = line.split()
        out[f[1]] = (f[2], f[3])
    return out


def test_no_sysfs_no_cgroupfs(default_sb, probe) -> None:
    types = {t for t, _ in sb_mounts(default_sb).values()}
    assert not types & {"sysfs", "cgroup", "cgroup2", "debugfs", "tracefs", "securityfs", "bpf"}, types
    # release_agent (CVE-2022-0492): there is no cgroupfs to find one in, and none can be mounted
    r = probe(default_sb, "open_wr=/sys/fs/cgroup/release_agent", "mount_cgroup")
    assert errnos(r) == {"open_wr=/sys/fs/cgroup/release_agent": "ENOENT", "mount_cgroup": "EPERM"}


def _not_nosuid_nodev(sb: Any) -> dict[str, tuple[str, str]]:
    """The mounts without nosuid, or without nodev where no device node must
    work (/dev, /dev/pts and the /dev/null binds over masked files)."""
    devices = {"/dev", "/dev/pts"} | set(MASKED_FILES)
    bad = {}
    for point, (fstype, opts) in sb_mounts(sb).items():
        o = opts.split(",")
        if "nosuid" not in o or ("nodev" not in o and point not in devices):
            bad[point] = (fstype, opts)
    return bad


def test_every_mount_is_nosuid_and_nodev(default_sb) -> None:
    assert _not_nosuid_nodev(default_sb) == {}


def test_every_mount_of_a_read_only_sandbox_is_nosuid_and_nodev(rootfs: Path) -> None:
    # its /etc/hostname and /etc/hosts binds are remounted read-only: with
    # nosuid and nodev kept (a bind remount sets the flags it is given)
    with Sandbox(rootfs=rootfs, read_only=True) as sb:
        assert _not_nosuid_nodev(sb) == {}
        assert "ro" in sb_mounts(sb)["/etc/hostname"][1].split(",")


def test_masks_are_no_writable_host_inode(default_sb, probe) -> None:
    """A masked file is a bind of a /dev/null.  If that is the host's own
    /dev/null inode, its mount must be read-only: else the sandbox can change
    a host inode (utimensat needs only write permission, which a 0666 device
    node grants).  Only looked at, never tried (it would touch the host)."""
    host = os.stat("/dev/null")
    present = [p for p in MASKED_FILES if os.path.exists(p)]
    r = probe(default_sb, *(f"stat={p}" for p in present))["ops"]
    mounts = sb_mounts(default_sb)
    bad = {}
    for p in present:
        st = r[f"stat={p}"]
        same = (os.makedev(*st["dev"]), st["ino"]) == (host.st_dev, host.st_ino)
        opts = mounts[p][1].split(",")
        if same and "ro" not in opts:
            bad[p] = mounts[p]
    assert bad == {}, "masks that are a writable bind of the host's /dev/null"


# -- hygiene ----------------------------------------------------------------------------


def test_no_fd_above_2(default_sb, probe) -> None:
    r = probe(default_sb)
    assert r["fds"] == [0, 1, 2], r["fd_targets"]
    assert r["fd_targets"]["0"] == "/dev/null"
    # with stdin given too, and through a shell (fds it inherits)
    res = default_sb.exec(["sh", "-c", f"exec {PROBE_PATH}"], stdin=b"")
    assert json.loads(res.stdout)["fds"] == [0, 1, 2]


def test_the_init_holds_no_host_fd(default_sb) -> None:
    """Seen from the host: the init's fds are its /dev/null stdio, the
    control socket, its signalfd, the sandbox's own /dev/null (which execs
    get for streams not piped) and the sandbox's own /proc/loadavg (read
    before an exec's fork); no host file, no layer tree."""
    pid = default_sb.pid
    targets = {int(n): os.readlink(f"/proc/{pid}/fd/{n}") for n in os.listdir(f"/proc/{pid}/fd")}
    assert sorted(targets)[:3] == [0, 1, 2], targets
    null = os.stat("/dev/null")
    for n in (0, 1, 2):
        # the host's null device, bound into the template mount namespace
        # (launch_unsafe.c), whose mounts the pivot_root detached: "/" then
        st = os.stat(f"/proc/{pid}/fd/{n}")
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == null.st_rdev, targets
    own = {t: os.stat(f"/proc/{pid}/root{t}") for t in ("/dev/null", "/proc/loadavg")}
    for n, t in targets.items():
        if n > 2 and not t.startswith(("socket:[", "anon_inode:")):
            st = os.stat(f"/proc/{pid}/fd/{n}")
            assert t in own and (st.st_dev, st.st_ino) == (own[t].st_dev, own[t].st_ino), targets


def test_init_environ_is_empty(default_sb) -> None:
    assert default_sb.files.read_bytes("/proc/1/environ") == b""


def test_exec_environment_is_built_from_scratch(rootfs, probe_binary, monkeypatch) -> None:
    monkeypatch.setenv("SANDBOX_TEST_HOST_ONLY", "must-not-leak")
    with Sandbox(rootfs=rootfs) as sb:
        sb.files.write_bytes(PROBE_PATH, probe_binary, mode=0o755)
        res = sb.exec([PROBE_PATH])
        r = json.loads(res.stdout)
    assert sorted(r["environ"]) == sorted([f"PATH={DEFAULT_PATH}", "HOSTNAME=sandbox", "HOME=/root"])
    assert r["cwd"] == "/"


def test_init_executable_is_a_sealed_memfd(default_sb, probe) -> None:
    """CVE-2019-5736: the init's binary can be neither reached nor written
    from inside; on the host it is a memfd sealed against writes."""
    pid = default_sb.pid
    assert os.readlink(f"/proc/{pid}/exe").startswith("/memfd:sandbox-init")
    fd = os.open(f"/proc/{pid}/exe", os.O_RDONLY | os.O_CLOEXEC)
    try:
        seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
    finally:
        os.close(fd)
    assert seals & fcntl.F_SEAL_WRITE and seals & fcntl.F_SEAL_GROW and seals & fcntl.F_SEAL_SHRINK, seals
    r = probe(default_sb, "open_wr=/proc/1/exe", "readlink=/proc/1/exe", "open_wr=/proc/self/exe")
    assert errnos(r) == {
        "open_wr=/proc/1/exe": "EACCES",
        "readlink=/proc/1/exe": "EACCES",
        "open_wr=/proc/self/exe": "ETXTBSY",  # a running binary
    }


# -- escape attempts ----------------------------------------------------------------------

NAMESPACES = {
    "unshare:user": "EPERM",  # nested user namespaces: refused
    "unshare:mnt": "EPERM",
    "unshare:user+mnt": "EPERM",
    "unshare:user+net": "EPERM",
    "unshare:uts": "EPERM",
    "unshare:ipc": "EPERM",
    "unshare:pid": "EPERM",
    "unshare:net": "EPERM",
    "unshare:cgroup": "EPERM",
    "unshare:time": "EPERM",
    "unshare:user+hi": "EPERM",
    "clone:user": "EPERM",
    "clone:user+mnt": "EPERM",
    "clone:net": "EPERM",
    "clone:pid": "EPERM",
    "clone:user+hi": "EPERM",  # bit 32 set: the kernel ignores it, the filter must not
    "clone3": "ENOSYS",  # so that libc falls back to clone, whose flags can be checked
    "setns=/proc/self/ns/user": "EPERM",  # the kernel itself says EINVAL
    "clone:": None,  # a plain fork still works
}

MOUNTS = {
    "mount": "EPERM",
    "mount_cgroup": "EPERM",
    "umount": "EPERM",  # unmasking /proc/kallsyms
    "pivot_root": "EPERM",
    "open_tree": "EPERM",  # the kernel would give an O_PATH fd
    "fsopen": "EPERM",
    "fspick": "EPERM",
    "move_mount": "EPERM",
    "mount_setattr": "EPERM",
}

KERNEL_INTERFACES = {
    "keyctl": "EPERM",
    "add_key": "EPERM",
    "request_key": "EPERM",
    "bpf": "EPERM",
    "perf_event_open": "EPERM",
    "userfaultfd": "EPERM",
    "io_uring_setup": "EPERM",
    "open_by_handle_at": "EPERM",  # "shocker"
}

PTRACE = {
    "ptrace_attach": "EPERM",  # PID 1
    "ptrace_traceme": "EPERM",
    "process_vm_readv": "EPERM",  # PID 1
    "process_vm_readv_self": "EPERM",
    "process_vm_writev_self": "EPERM",
}

SYSTEM = {
    "kexec_load": "EPERM",
    "kexec_file_load": "EPERM",
    "init_module": "EPERM",
    "finit_module": "EPERM",
    "delete_module": "EPERM",
    "reboot": "EPERM",
    "swapon": "EPERM",
    "swapoff": "EPERM",
    "acct": "EPERM",
    "clock_settime": "EPERM",  # the kernel itself says EINVAL to the invalid time
    "settimeofday": "EPERM",
}

SOCKETS = {
    "socket:alg": "EPERM",
    "socket:alg+hi": "EPERM",
    "socket:vsock": "EPERM",
    "socket:vsock+hi": "EPERM",  # a family compared on 64 bits would let this through
    "socket:packet": "EPERM",
    "socket:inet_raw": "EPERM",
    "socket:unix": None,
    "socket:inet": None,
    "socket:inet6": None,
    # family,type,protocol: netlink beyond routes and socket diagnostics
    # (nf_tables, xfrm, generic, uevents), protocols beyond TCP, UDP and ping,
    # families with a history of kernel exploits
    "socket=16,3,0": None,  # NETLINK_ROUTE
    "socket=16,3,0,hi": None,  # the filter masks the family to 32 bits, as the kernel reads it
    "socket=16,3,4": None,  # NETLINK_SOCK_DIAG
    "socket=16,3,9": "EPROTONOSUPPORT",  # NETLINK_AUDIT: what a kernel without audit says
    "socket=16,3,12": "EPERM",  # NETLINK_NETFILTER
    "socket=16,3,6": "EPERM",  # NETLINK_XFRM
    "socket=16,3,16": "EPERM",  # NETLINK_GENERIC
    "socket=16,3,15": "EPERM",  # NETLINK_KOBJECT_UEVENT
    "socket=2,2,1": None,  # ICMP echo (unprivileged ping)
    "socket=2,1,132": "EPERM",  # SCTP
    "socket=2,5,132": "EPERM",  # SCTP, SOCK_SEQPACKET
    "socket=2,1,262": "EPERM",  # MPTCP
    "socket=2,2,136": "EPERM",  # UDP-Lite
    "socket=10,3,58": "EPERM",  # raw ICMPv6
    "socket=17,3,768": "EPERM",  # AF_PACKET
    "socket=15,3,2": "EPERM",  # AF_KEY
    "socket=21,5,0": "EPERM",  # AF_RDS
    "socket=24,1,0": "EPERM",  # AF_PPPOX
    "socket=29,3,1": "EPERM",  # AF_CAN
    "socket=30,5,0": "EPERM",  # AF_TIPC
    "socket=31,1,0": "EPERM",  # AF_BLUETOOTH
    "socket=44,3,0": "EPERM",  # AF_XDP
}

IOCTLS = {
    "ioctl:tiocsti": "EPERM",  # on /dev/null the kernel itself says ENOTTY
    "ioctl:tiocsti_hi": "EPERM",  # TIOCSTI in the low 32 bits of a 64-bit cmd
    "ioctl:tioclinux": "EPERM",
    "ioctl:tcgets": "ENOTTY",  # ordinary ioctls still reach the kernel
    "ioctl:fionread": None,
}

FILES = {
    "mknod=/tmp/probe-dev": "EPERM",
    "mkfifo=/tmp/probe-fifo": None,
    "open_wr=/proc/sys/kernel/core_pattern": "EACCES",
    "open_wr=/sys/fs/cgroup/release_agent": "ENOENT",
    "read=/proc/1/root/etc/passwd": "EACCES",
    "read=/proc/1/cwd/etc/passwd": "EACCES",
}

OTHERS = {
    "pidfd_getfd": "EPERM",  # the init's control socket
    "kcmp": "EPERM",
    "chroot": "EPERM",
    "sethostname": "EPERM",
    "personality=0x0040000": "EPERM",  # ADDR_NO_RANDOMIZE: ASLR off
    "personality=0xffffffff": None,  # the query
    "personality=8": None,  # UNAME26
    "memfd_secret": "ENOSYS",  # denied as if absent (the profile says why)
    "cachestat": "ENOSYS",
}

GROUPS = {
    "others": OTHERS,
    "namespaces": NAMESPACES,
    "mounts": MOUNTS,
    "kernel_interfaces": KERNEL_INTERFACES,
    "ptrace": PTRACE,
    "system": SYSTEM,
    "sockets": SOCKETS,
    "ioctls": IOCTLS,
    "files": FILES,
}


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_escape_attempts_fail_with_the_exact_errno(default_sb, probe, group: str) -> None:
    expected = GROUPS[group]
    r = probe(default_sb, *expected)
    assert mismatches(r, expected) == {}, "op: (got, expected)"


def test_escape_attempts_as_an_unprivileged_user(default_sb, probe) -> None:
    expected = {**NAMESPACES, **MOUNTS, **KERNEL_INTERFACES, **PTRACE, **SYSTEM, **SOCKETS, **IOCTLS}
    r = probe(default_sb, *expected, user="1000:1000")
    assert mismatches(r, expected) == {}, "op: (got, expected)"


def test_escape_attempts_leave_the_host_unchanged(default_sb, probe) -> None:
    everything = {k: v for g in GROUPS.values() for k, v in g.items()}
    before = (
        socket.gethostname(),
        Path("/proc/sys/kernel/core_pattern").read_bytes(),
        Path("/proc/sys/kernel/shmmax").read_bytes(),
        Path("/proc/sys/kernel/hostname").read_bytes(),
    )
    init = default_sb.pid
    r = probe(default_sb, *everything, "kill=1:9", "kill=1:15")
    assert mismatches(r, everything) == {}
    after = (
        socket.gethostname(),
        Path("/proc/sys/kernel/core_pattern").read_bytes(),
        Path("/proc/sys/kernel/shmmax").read_bytes(),
        Path("/proc/sys/kernel/hostname").read_bytes(),
    )
    assert after == before
    # the sandbox's own init is still there, and still serves
    assert default_sb.pid == init and Path(f"/proc/{init}").exists()
    assert sh_ok(default_sb, "echo alive") == "alive\n"


def test_pid_1_survives_kill(default_sb, probe) -> None:
    init = default_sb.pid
    # the kernel drops signals to a namespace's init that it has no handler for:
    # kill() answers 0 and nothing happens
    r = probe(default_sb, "kill=1:9", "kill=1:15", "kill=1:2", "kill=1:1", "ptrace_attach")
    assert errnos(r) == {"kill=1:9": None, "kill=1:15": None, "kill=1:2": None, "kill=1:1": None,
                         "ptrace_attach": "EPERM"}  # fmt: skip
    assert Path(f"/proc/{init}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    assert default_sb.files.read_bytes("/proc/1/cmdline").split(b"\0")[0] == b"sandbox-init"
    assert sh(default_sb, "kill -9 1; kill -TERM 1; echo $?").exit_code == 0
    assert sh_ok(default_sb, "echo alive") == "alive\n"


def test_signals_cannot_reach_host_processes(default_sb, probe) -> None:
    host_pids = [os.getpid(), os.getppid(), default_sb.pid]
    assert all(p > 100 for p in host_pids[::2]), host_pids  # far above the sandbox's own pids
    r = probe(default_sb, *(f"kill={p}:0" for p in host_pids if p > 100))
    assert set(errnos(r).values()) == {"ESRCH"}, r["ops"]


def test_host_files_cannot_be_reached_through_proc(default_sb, probe, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    marker.write_text("host-only marker\n")
    marker.chmod(0o644)
    host_name = Path("/etc/hostname").read_text() if Path("/etc/hostname").exists() else None
    paths = {
        f"read=/proc/self/root/../../..{marker}": "ENOENT",
        f"read=/proc/self/root/../../../..{marker}": "ENOENT",
        f"read={marker}": "ENOENT",
        f"read=/proc/1/root{marker}": "EACCES",
        f"read=/proc/1/root/../../..{marker}": "EACCES",
        "read=/proc/1/root/etc/hostname": "EACCES",
    }
    r = probe(default_sb, *paths, "read=/proc/self/root/../../etc/hostname", "readlink=/proc/self/root")
    assert mismatches(r, {**paths, "read=/proc/self/root/../../etc/hostname": None}) == {}
    # the root's parent is the root: what shows is the sandbox's own file
    assert r["ops"]["read=/proc/self/root/../../etc/hostname"]["data"] == "sandbox\n"
    assert r["ops"]["readlink=/proc/self/root"]["data"] == "/"
    if host_name is not None and host_name != "sandbox\n":
        assert all(host_name not in (v.get("data") or "") for v in r["ops"].values())


def test_setuid_binaries_give_no_privilege(default_sb, probe) -> None:
    probe(default_sb)  # installs it
    sh_ok(
        default_sb,
        f"cp {PROBE_PATH} /tmp/probe-suid && chown 0:0 /tmp/probe-suid && chmod 6755 /tmp/probe-suid",
    )
    st = probe(default_sb, "stat=/tmp/probe-suid")["ops"]["stat=/tmp/probe-suid"]
    assert st["mode"] & stat.S_ISUID and st["mode"] & stat.S_ISGID and st["uid"] == 0, st
    res = default_sb.exec(["/tmp/probe-suid"], user="1000:1000")
    r = json.loads(res.stdout)
    assert r["ids"]["uid"] == [1000, 1000, 1000] and r["ids"]["gid"] == [1000, 1000, 1000], r["ids"]
    assert caps(r) == {"CapEff": 0, "CapPrm": 0, "CapBnd": 0, "CapAmb": 0, "CapInh": 0}
    assert r["status"]["NoNewPrivs"] == "1"


def test_only_the_native_abi(sandbox_host, busybox_rootfs, probe) -> None:
    """A system call through another ABI (i386 int 0x80, x32) kills the
    process (SIGSYS), whatever the call: the filter knows x86_64 numbers only."""
    require(platform.machine() == "x86_64", "the probe's ABI checks are written for x86_64")
    with Sandbox(rootfs=busybox_rootfs, seccomp=None) as sb:
        kernel = probe(sb, "abi:i386", "abi:x32")["ops"]
    with Sandbox(rootfs=busybox_rootfs) as sb:
        r = probe(sb, "abi:i386", "abi:x32")["ops"]
        # the init took the kill action's notification: the verdict says so
        v = sb.exec(["/tmp/probe", "abi:x32"])
        assert (v.reason, v.exit_code) == ("seccomp", 0), v
        assert v.syscall is not None and v.syscall.startswith("syscall "), v  # an x32 number
    assert r["abi:x32"]["signal"] == 31, r  # SIGSYS
    if kernel["abi:i386"]["ret"] == 0:  # the kernel has the i386 ABI: the filter must stop it
        assert r["abi:i386"]["signal"] == 31, r
    else:  # no i386 ABI: int 0x80 faults before any filter
        assert r["abi:i386"]["signal"] in (11, 31), r


def test_without_seccomp_the_kernel_answers_differently(sandbox_host, busybox_rootfs, probe) -> None:
    """The control for the escape tests: with seccomp=None these calls reach
    the kernel, which answers them otherwise than the filter (so the EPERMs
    above are the filter's).  Only answers that depend on no sysctl."""
    kernel = {
        "unshare:user": None,
        "unshare:user+mnt": None,  # a nested user namespace with every cap in it
        "clone:user": None,
        "clone:user+hi": None,  # the kernel ignores the upper half
        "clone3": None,
        "setns=/proc/self/ns/user": "EINVAL",
        "keyctl": None,
        "add_key": None,
        "request_key": "ENOKEY",
        "ptrace_traceme": None,
        "process_vm_readv_self": None,
        "open_tree": None,
        "userfaultfd": None,
        "clock_settime": "EINVAL",
        "settimeofday": "EINVAL",
        "ioctl:tiocsti": "ENOTTY",
        "ioctl:tiocsti_hi": "ENOTTY",
        "ioctl:tioclinux": "ENOTTY",
        "personality=0x0040000": None,
    }
    with Sandbox(rootfs=busybox_rootfs, seccomp=None) as sb:
        r = probe(sb, *kernel)
    assert mismatches(r, kernel) == {}
    # ... and every one of them differs from what the default profile answers
    default = {k: v for g in GROUPS.values() for k, v in g.items()}
    assert all(default[k] != v for k, v in kernel.items())


# -- options --------------------------------------------------------------------------------


@pytest.mark.parametrize("user", [None, "1000:1000"])
def test_cap_add_grants_exactly_that_capability(sandbox_host, busybox_rootfs, probe, user) -> None:
    bit = 1 << CAP_NET_BIND_SERVICE
    with Sandbox(rootfs=busybox_rootfs, cap_add=["CAP_NET_BIND_SERVICE"]) as sb:
        r = probe(sb, user=user)
    c = caps(r)
    assert c["CapEff"] == bit and c["CapPrm"] == bit and c["CapBnd"] == bit, r["status"]
    assert c["CapAmb"] & ~bit == 0 and c["CapInh"] & ~bit == 0, r["status"]
    assert r["status"]["NoNewPrivs"] == "1" and r["status"]["Seccomp"] == "2"


def test_cap_add_takes_effect(sandbox_host, busybox_rootfs) -> None:
    script = "touch /tmp/f && chown 1234 /tmp/f && stat -c %u /tmp/f"
    with Sandbox(rootfs=busybox_rootfs) as sb:
        r = sh(sb, script)
        assert r.exit_code != 0 and b"Operation not permitted" in r.stderr, r.stderr
    with Sandbox(rootfs=busybox_rootfs, cap_add=["CHOWN"]) as sb:
        assert sh_ok(sb, script) == "1234\n"
        assert sh_ok(sb, script.replace("/tmp/f", "/tmp/g"), user="1000:1000") == "1234\n"


def test_seccomp_none_keeps_everything_else(sandbox_host, busybox_rootfs, probe) -> None:
    with Sandbox(rootfs=busybox_rootfs, seccomp=None) as sb:
        r = probe(sb, "unshare:user")
    assert r["status"]["Seccomp"] == "0"
    assert caps(r) == {"CapEff": 0, "CapPrm": 0, "CapBnd": 0, "CapAmb": 0, "CapInh": 0}
    assert r["status"]["NoNewPrivs"] == "1"
    assert r["fds"] == [0, 1, 2]
    assert errnos(r) == {"unshare:user": None}  # nothing filters it now


@pytest.mark.parametrize("cap_add", [[], ["SETFCAP"]])
def test_mapping_root_into_a_nested_user_namespace_needs_setfcap(
    sandbox_host, busybox_rootfs, cap_add
) -> None:
    """Without seccomp a command may make a user namespace, but mapping uid 0
    of the sandbox's (container root) into it is the kernel's CAP_SETFCAP
    check (Linux 5.12+): refused without it, allowed with it."""
    with Sandbox(rootfs=busybox_rootfs, seccomp=None, cap_add=cap_add) as sb:
        unmapped = sb.exec(["unshare", "-U", "id", "-u"])
        assert unmapped.ok and unmapped.stdout == b"65534\n", unmapped  # overflow uid: no map
        r = sb.exec(["unshare", "-Ur", "id", "-u"])
    if cap_add:
        assert r.ok and r.stdout == b"0\n", r
    else:
        assert r.exit_code == 1 and b"Operation not permitted" in r.stderr, r


def test_judge_profile_allows_only_unix_sockets(sandbox_host, busybox_rootfs, probe) -> None:
    sockets = [k for k in SOCKETS if k != "socket:unix"] + [
        "socket:inet_udp",
        "socket:netlink",
        "socket:inet+hi",
    ]
    with Sandbox(rootfs=busybox_rootfs, seccomp="judge") as sb:
        r = probe(sb, *sockets, "socket:unix")
        assert r["status"]["Seccomp"] == "2"
        assert mismatches(r, {**dict.fromkeys(sockets, "EPERM"), "socket:unix": None}) == {}


def test_judge_profile_is_stricter_than_the_default(sandbox_host, busybox_rootfs, probe) -> None:
    # what the default refuses stays refused, with the same answer
    refused = {k: v for g, ops in GROUPS.items() if g != "sockets" for k, v in ops.items() if v is not None}
    # and what the judge takes away besides the network
    judge_only = {
        "memfd_create": "ENOSYS",  # no fexecve of a binary that exists only in memory
        "mkfifo=/tmp/probe-fifo": "EPERM",  # mknod(at), FIFOs included
        "shmget": "EPERM",  # System V IPC
        "personality=8": "EPERM",
    }
    with Sandbox(rootfs=busybox_rootfs, seccomp="judge") as sb:
        assert mismatches(probe(sb, *refused, *judge_only), {**refused, **judge_only}) == {}
    with Sandbox(rootfs=busybox_rootfs) as sb:  # the default allows those
        assert errnos(probe(sb, *judge_only)) == dict.fromkeys(judge_only)


def test_judge_profile_runs_ordinary_programs(sandbox_host, debian_rootfs, probe) -> None:
    with Sandbox(rootfs=debian_rootfs, seccomp="judge") as sb:
        assert sh_ok(sb, "seq 1 100 | sort -rn | head -1") == "100\n"
        assert sh_ok(sb, "perl -e 'my $p = fork; if (!$p) { exit 3 } waitpid($p, 0); print $? >> 8'") == "3"
        assert sh_ok(sb, "seq 1 100000 | sort --parallel=4 -S 1M -R | sort -n | tail -1") == "100000\n"
        r = probe(sb, "threads=4", "fork", "spawn", "clone:", "ioctl:tcgets")
        assert errnos(r) == {
            "threads=4": None,
            "fork": None,
            "spawn": None,
            "clone:": None,
            "ioctl:tcgets": "ENOTTY",
        }


def docker_profile(tmp_path: Path, profile: dict[str, Any]) -> Path:
    p = tmp_path / "profile.json"
    p.write_text(json.dumps(profile))
    return p


def test_profile_from_a_file_takes_effect(sandbox_host, busybox_rootfs, probe, tmp_path: Path) -> None:
    profile = docker_profile(
        tmp_path,
        {
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [
                {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EACCES},
                {
                    "names": ["socket"],
                    "action": "SCMP_ACT_ERRNO",
                    "errnoRet": errno.EAFNOSUPPORT,
                    "args": [{"index": 0, "value": socket.AF_INET6, "op": "SCMP_CMP_EQ"}],
                },
            ],
        },
    )
    with Sandbox(rootfs=busybox_rootfs, seccomp=profile) as sb:
        r = probe(sb, "mkdir=/tmp/d", "mkdirat=/tmp/d", "socket:inet6", "socket:inet", "unshare:user")
    assert r["status"]["Seccomp"] == "2"
    assert errnos(r) == {
        "mkdir=/tmp/d": "EACCES",
        "mkdirat=/tmp/d": None,  # only the syscall named
        "socket:inet6": "EAFNOSUPPORT",  # the args condition
        "socket:inet": None,
        "unshare:user": None,  # the default action: allow
    }


def test_the_probe_sees_a_64_bit_bypass(sandbox_host, busybox_rootfs, probe, tmp_path: Path) -> None:
    """The "+hi" checks are not vacuous: a profile that compares a 32-bit
    argument on the whole register (Docker's style of rule) is bypassed by
    setting bit 32, and the probe shows it."""
    profile = docker_profile(
        tmp_path,
        {
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                {"names": ["socket"], "action": "SCMP_ACT_ERRNO",
                 "args": [{"index": 0, "value": socket.AF_VSOCK, "op": "SCMP_CMP_EQ"}]},
            ],
        },
    )  # fmt: skip
    with Sandbox(rootfs=busybox_rootfs, seccomp=None) as sb:
        vsock = errnos(probe(sb, "socket:vsock"))["socket:vsock"]
    require(vsock is None, f"this kernel has no AF_VSOCK sockets ({vsock})")
    with Sandbox(rootfs=busybox_rootfs, seccomp=profile) as sb:
        r = probe(sb, "socket:vsock", "socket:vsock+hi")
    assert errnos(r) == {"socket:vsock": "EPERM", "socket:vsock+hi": None}


def test_profile_from_a_str_path(sandbox_host, busybox_rootfs, probe, tmp_path: Path) -> None:
    profile = docker_profile(
        tmp_path,
        {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]},
    )
    with Sandbox(rootfs=busybox_rootfs, seccomp=str(profile)) as sb:
        r = probe(sb, "mkdir=/tmp/d")
    assert r["ops"]["mkdir=/tmp/d"]["errno"] == "EPERM"  # Docker's default errnoRet


GOOD_RULE = {"names": ["getpid"], "action": "SCMP_ACT_ALLOW"}


@pytest.mark.parametrize(
    ("profile", "path"),
    [
        ({"syscalls": [GOOD_RULE]}, "defaultAction"),
        ({"defaultAction": "SCMP_ACT_NOPE", "syscalls": []}, "defaultAction"),
        ({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [GOOD_RULE, {"names": ["read"], "action": 7}]},
         "syscalls[1].action"),
        ({"defaultAction": "SCMP_ACT_ERRNO",
          "syscalls": [GOOD_RULE, {"names": "read", "action": "SCMP_ACT_ALLOW"}]},
         "syscalls[1].names"),
        ({"defaultAction": "SCMP_ACT_ERRNO",
          "syscalls": [{"names": ["socket"], "action": "SCMP_ACT_ALLOW",
                        "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_SOMETIMES"}]}]},
         "syscalls[0].args[0].op"),
        ({"defaultAction": "SCMP_ACT_ERRNO",
          "syscalls": [{"names": ["socket"], "action": "SCMP_ACT_ALLOW",
                        "args": [{"index": 9, "value": 1, "op": "SCMP_CMP_EQ"}]}]},
         "syscalls[0].args[0].index"),
        ({"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_PDP11"], "syscalls": []},
         "architectures[0]"),
        ({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": {"names": ["read"]}}, "syscalls"),
    ],
)  # fmt: skip
def test_malformed_profile_names_the_json_path(sandbox_host, busybox_rootfs, tmp_path, profile, path) -> None:
    p = docker_profile(tmp_path, profile)
    with pytest.raises(ConfigError) as e:
        Sandbox(rootfs=busybox_rootfs, seccomp=p)
    assert e.value.option == "seccomp"
    assert path in str(e.value), str(e.value)


def test_profile_that_is_not_json(sandbox_host, busybox_rootfs, tmp_path: Path) -> None:
    p = tmp_path / "broken.json"
    p.write_text('{"defaultAction": "SCMP_ACT_ERRNO",\n "syscalls": [\n')
    with pytest.raises(ConfigError) as e:
        Sandbox(rootfs=busybox_rootfs, seccomp=p)
    assert e.value.option == "seccomp" and str(p) in str(e.value), str(e.value)


@pytest.mark.parametrize("value", ["no-such-profile", "/no/such/profile.json"])
def test_unknown_profile(sandbox_host, busybox_rootfs, value: str) -> None:
    with pytest.raises(ConfigError) as e:
        Sandbox(rootfs=busybox_rootfs, seccomp=value)
    assert e.value.option == "seccomp" and value in str(e.value), str(e.value)


def test_read_only_rootfs_under_the_default_profile(rootfs, probe) -> None:
    with Sandbox(rootfs=rootfs, read_only=True) as sb:
        r = probe(sb, "create=/newfile", "create=/etc/newfile", "mkdir=/newdir", "create=/tmp/newfile",
                  "create=/dev/shm/newfile")  # fmt: skip
        assert errnos(r) == {
            "create=/newfile": "EROFS",
            "create=/etc/newfile": "EROFS",
            "mkdir=/newdir": "EROFS",
            "create=/tmp/newfile": None,
            "create=/dev/shm/newfile": None,
        }
        assert r["status"]["Seccomp"] == "2"


# -- ordinary work under the default profile ---------------------------------------------

WORKLOADS = [
    ("seq 1 1000 | sort -rn | head -3 | tr '\\n' ' '", lambda o: o == "1000 999 998 "),
    ("apt-get --version", lambda o: o.startswith("apt ")),
    ("dpkg -l", lambda o: "ii  dpkg " in o and "ii  bash " in o),
    ("ls -R /usr/share/doc | wc -l", lambda o: int(o) > 100),
    ("cat /proc/self/status", lambda o: "Seccomp:\t2" in o and "NoNewPrivs:\t1" in o),
    ("bash -c 'x=$(echo sub); (echo $x) & wait; echo $((6 * 7))'", lambda o: o == "sub\n42\n"),
    ("perl -e 'my $p = fork; if (!$p) { exit 3 } waitpid($p, 0); print $? >> 8'", lambda o: o == "3"),
    ("seq 1 200000 | sort --parallel=4 -S 1M -R | sort -n | tail -1", lambda o: o == "200000\n"),
    ("seq 1 8 | xargs -P 4 -n 1 echo | sort -n | tr '\\n' ' '", lambda o: o == "1 2 3 4 5 6 7 8 "),
    ("tar -C /etc -cf - passwd group | tar -tf - | sort | tr '\\n' ' '", lambda o: o == "group passwd "),
    ("head -c 100000 /dev/zero | gzip | gunzip | wc -c", lambda o: o == "100000\n"),
    ("timeout 5 sleep 0; echo $?", lambda o: o == "0\n"),
    ("mkfifo /tmp/p && (echo via-fifo > /tmp/p &) && cat /tmp/p", lambda o: o == "via-fifo\n"),
    ("flock /tmp/lock true && echo locked", lambda o: o == "locked\n"),
    (
        "nice -n 5 nproc >/dev/null && taskset -c 0 true && prlimit --nofile=64 true && echo ok",
        lambda o: o == "ok\n",
    ),
    ("ipcmk -M 4096 >/dev/null && ipcs -m | grep -c 4096", lambda o: o == "1\n"),
    (
        "dd if=/dev/zero of=/tmp/z bs=64k count=16 2>/dev/null && sync && stat -c %s /tmp/z",
        lambda o: o == "1048576\n",
    ),
    ("df -P / >/dev/null && id -u && getent passwd root | cut -d: -f1", lambda o: o == "0\nroot\n"),
    ("date +%Y | grep -c '^20'", lambda o: o == "1\n"),
]


@pytest.mark.parametrize(("script", "check"), WORKLOADS, ids=[w[0][:40] for w in WORKLOADS])
def test_ordinary_workloads_run_under_the_default_profile(sandbox_host, debian_rootfs, script, check) -> None:
    with Sandbox(rootfs=debian_rootfs) as sb:
        r = sh(sb, script, timeout=60)
        assert r.reason == "exited" and r.exit_code == 0, (script, r, r.stderr)
        assert check(r.stdout_text), (script, r.stdout_text, r.stderr)


def test_threads_fork_and_posix_spawn_work(default_sb, probe) -> None:
    """glibc tries clone3 first for threads and posix_spawn: ENOSYS must make
    it fall back to clone, which the profile allows for threads and forks."""
    r = probe(default_sb, "threads=8", "fork", "spawn", "clone:")
    assert r["ops"] == {
        "threads=8": {"ret": 8, "errno": None},
        "fork": {"ret": 7, "errno": None},
        "spawn": {"ret": 0, "errno": None},
        "clone:": {"ret": 0, "errno": None},
    }


def test_nested_sandboxing_tools_are_refused(sandbox_host, debian_rootfs) -> None:
    with Sandbox(rootfs=debian_rootfs) as sb:
        for cmd in ("unshare -U true", "unshare -r true", "unshare -m true"):
            r = sh(sb, cmd)
            assert r.exit_code != 0 and b"Operation not permitted" in r.stderr, (cmd, r.stderr)
