"""A hostile program under limits, trying to outlast them or to take from
the host and from other sandboxes what the limits do not count.

Each test plays that program (busybox sh, or a small static helper built
here) and asserts the safe behaviour: what an exec leaves behind is held to
the exec's limits, and a sandbox cannot use up a kernel quota it shares
with the host user that started it or with the next sandbox."""

from __future__ import annotations

import ctypes
import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox import Limits, Sandbox
from sandbox import cgroup as sandbox_cgroup
from tests.conftest import require

pytestmark = pytest.mark.integration

SAFE = Limits(memory="256M", pids=64, timeout=30)
HELPER = "/tmp/hog"
WAIT = 5.0  # seconds for a condition that the safe behaviour meets in well under one

HELPER_SRC = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <mqueue.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/shm.h>
#include <unistd.h>
/* hog WHAT N [hold]: make N objects of a kind (never freed), print how many
 * the kernel gave and the first errno; "hold": then wait to be killed. */
int main(int argc, char **argv)
{
    const char *what = argv[1];
    int n = atoi(argv[2]), ok = 0, err = 0, size = 0;
    for (int i = 0; i < n; i++) {
        int r = -1;
        if (!strcmp(what, "inotify")) {
            r = inotify_init1(0);
        } else if (!strcmp(what, "mq")) {
            char name[64];
            struct mq_attr a = {.mq_maxmsg = 10, .mq_msgsize = 8192};
            snprintf(name, sizeof name, "/hog-%d-%d", getpid(), i);
            r = mq_open(name, O_CREAT | O_RDWR, 0600, &a);
        } else if (!strcmp(what, "shm")) { /* 1 MiB each, touched, never removed */
            int id = shmget(IPC_PRIVATE, 1 << 20, IPC_CREAT | 0600);
            char *p = id < 0 ? (char *)-1 : shmat(id, 0, 0);
            if (p != (char *)-1) {
                memset(p, 1, 1 << 20);
                r = shmdt(p);
            }
        } else if (!strcmp(what, "sigq")) { /* queued to itself, blocked: pending */
            sigset_t set;
            sigemptyset(&set);
            sigaddset(&set, SIGRTMIN);
            sigprocmask(SIG_BLOCK, &set, 0);
            r = sigqueue(getpid(), SIGRTMIN, (union sigval){0});
        } else if (!strcmp(what, "pipe")) {
            int p[2];
            r = pipe(p);
            if (r == 0)
                size = fcntl(p[0], F_GETPIPE_SZ);
        }
        if (r < 0) {
            if (!err)
                err = errno;
        } else {
            ok++;
        }
    }
    printf("%s ok=%d errno=%d size=%d\n", what, ok, err, size);
    fflush(stdout);
    if (argc > 3)
        for (;;)
            pause();
    return 0;
}
"""


@pytest.fixture(scope="module")
def hog_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require(shutil.which("gcc"), "no gcc to build the helper")
    d = tmp_path_factory.mktemp("hog")
    (d / "hog.c").write_text(HELPER_SRC)
    r = subprocess.run(
        ["gcc", "-static", "-O2", "-o", str(d / "hog"), str(d / "hog.c")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    require(r.returncode == 0 or "cannot find -lc" not in r.stderr, "no static libc (libc6-dev)")
    assert r.returncode == 0, r.stderr
    return d / "hog"


@pytest.fixture(scope="module")
def hog(hog_path: Path) -> bytes:
    return hog_path.read_bytes()


@pytest.fixture
def cgroups(sandbox_host: None) -> None:
    require(sandbox_cgroup.root() is not None, f"no usable cgroups: {sandbox_cgroup.why()}")


def started(rootfs: Path, hog: bytes, limits: Limits = SAFE) -> Sandbox:
    sb = Sandbox(rootfs=rootfs, limits=limits)
    sb.start()
    sb.files.write_bytes(HELPER, hog, mode=0o755)
    return sb


def counts(line: bytes) -> dict[str, int]:
    """ "inotify ok=128 errno=24 size=0" -> {"ok": 128, "errno": 24, "size": 0}"""
    return {k: int(v) for k, _, v in (w.partition("=") for w in line.decode().split()[1:])}


def descendants(pid: int) -> Iterator[tuple[int, str]]:
    """(host pid, cmdline) of every live process under `pid` (the init)."""
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:  # gone meanwhile
            continue
        for t in tasks:
            try:
                kids = Path(f"/proc/{p}/task/{t}/children").read_text().split()
            except OSError:
                continue
            for k in map(int, kids):
                todo.append(k)
                try:
                    raw = Path(f"/proc/{k}/cmdline").read_bytes()
                except OSError:
                    continue
                if raw:  # a zombie has none
                    yield k, raw.replace(b"\0", b" ").decode(errors="replace").strip()


def wait_for(cond: object, seconds: float = WAIT) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if cond():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return bool(cond())  # type: ignore[operator]


def running(sb: Sandbox, needle: str) -> list[str]:
    assert sb.pid is not None
    return [c for _, c in descendants(sb.pid) if needle in c]


# -- what an exec leaves behind -----------------------------------------------------------


def test_a_process_left_behind_is_ended_at_the_exec_timeout(cgroups, busybox_rootfs) -> None:
    """The attacker gets: past any `timeout`.  A command that leaves a
    process in its own session and exits is "exited", and the process runs
    on without a deadline until the sandbox closes (Collector.settle
    disposes of the exec's group without killing or watching it): a judge's
    timeout=1 bounds nothing a submission puts in the background."""
    with Sandbox(rootfs=busybox_rootfs, limits=Limits(memory="256M", pids=64)) as sb:
        began = time.monotonic()
        r = sb.exec(["sh", "-c", "setsid sleep 300 </dev/null >/dev/null 2>&1 & echo left"], timeout=1)
        assert r.reason == "exited" and r.stdout == b"left\n", r
        # gone once the exec's deadline has passed (the exec's own process
        # is long gone; what it started may run until then, not longer)
        assert wait_for(lambda: not running(sb, "sleep 300"), began + WAIT - time.monotonic()), (
            "a process the exec left behind outlived its timeout=1"
        )


# busybox sh: a loop that starts a new spinner of ~0.3 s CPU each time: no
# process of it ever gets near RLIMIT_CPU (the backstop counts each apart)
RESPAWN = "while :; do sh -c 'i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done'; done"


def test_processes_left_behind_are_held_to_the_exec_cpu_time(cgroups, busybox_rootfs) -> None:
    """The attacker gets: unbounded CPU under cpu_time=.  The watchdog stops
    looking at the exec's group when its exit record comes; RLIMIT_CPU (a
    second above the limit) is per process, so a background loop that
    starts short-lived spinners burns CPU for the sandbox's whole life while
    the exec reports cpu_time ~0."""
    lim = Limits(memory="256M", pids=64, cpu_time=0.3)
    with Sandbox(rootfs=busybox_rootfs, limits=lim) as sb:
        left = f"setsid sh -c {shlex.quote(RESPAWN)} </dev/null >/dev/null 2>&1 & echo left"
        r = sb.exec(["sh", "-c", left])
        assert r.reason == "exited" and r.cpu_time < 0.3, r
        # 0.3 s of CPU, at one CPU or more, is used within a second at most
        gone = wait_for(lambda: not running(sb, "while"))
        assert gone, "processes the exec left behind ran on past its cpu_time=0.3"


# -- kernel quotas shared with the host user ------------------------------------------------


class _MqAttr(ctypes.Structure):
    _fields_ = [(n, ctypes.c_long) for n in ("flags", "maxmsg", "msgsize", "curmsgs", "p0", "p1", "p2", "p3")]


def host_mq_open() -> int:
    """0 if this (root) process can make a POSIX message queue of 80 KiB
    (removed at once), else the errno."""
    rt = ctypes.CDLL("librt.so.1", use_errno=True)
    name = b"/sandbox-test-%d" % os.getpid()
    attr = _MqAttr(0, 10, 8192, 0)
    fd = rt.mq_open(name, os.O_CREAT | os.O_RDWR, ctypes.c_int(0o600), ctypes.byref(attr))
    err = ctypes.get_errno()
    if fd < 0:
        return err
    rt.mq_close(fd)
    rt.mq_unlink(name)
    return 0


# "another sandbox": with its own id range (idmap="auto", the default); with
# idmap="shared" every sandbox is one host user, and these budgets are shared
WHO = ["host root", "another sandbox"]


@pytest.mark.parametrize(
    "kind",
    [
        # the attacker gets: every inotify_init of the host's root (systemd,
        # udev, `tail -f`, the caller itself) and of every other sandbox
        # fails with EMFILE (fs.inotify.max_user_instances: 128 here)
        "inotify",
        # the attacker gets: the host's root cannot queue a signal (sigqueue,
        # timer_create, an RT signal of its own: EAGAIN) nor can any other
        # sandbox (RLIMIT_SIGPENDING of root, ~96k here)
        "sigq",
    ],
)
@pytest.mark.parametrize("who", WHO)
def test_a_sandbox_cannot_use_up_a_quota_of_the_host_user(
    cgroups, busybox_rootfs, hog, hog_path, kind, who
) -> None:
    """While one process of a sandbox holds what the kernel allows.  A user
    namespace is owned by the host uid that cloned it: the kernel's ucounts
    charge what a sandbox's users hold to that owner too, against the
    owner's own limit.  Cloned by root (until session 8), the host's root
    user and every sandbox shared one quota; now the owner is the sandbox's
    host uid (launch_unsafe.c, become_owner), shared by the sandboxes of one
    id range only."""
    a = started(busybox_rootfs, hog)
    b = started(busybox_rootfs, hog)
    try:
        p = a.spawn([HELPER, kind, "200000", "hold"])
        assert p.stdout is not None
        took = counts(p.stdout.readline())
        assert took["ok"] > 0, took
        try:
            host = subprocess.run([str(hog_path), kind, "1"], capture_output=True, timeout=30)
            other = b.exec([HELPER, kind, "1"], timeout=10)
        finally:
            p.kill()
            p.wait()
        if who == "host root":
            mine = counts(host.stdout)
            assert mine["ok"] == 1, (
                f"the host's root got {os.strerror(mine['errno'])}: a sandbox holds {took['ok']}"
            )
        else:
            theirs = counts(other.stdout)
            assert theirs["ok"] == 1, f"another sandbox got {os.strerror(theirs['errno'])}"
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("who", WHO)
def test_a_sandbox_cannot_use_up_the_host_users_mqueue_bytes(cgroups, busybox_rootfs, hog, who) -> None:
    """The attacker gets: mq_open fails with EMFILE for the host's root and
    for every other sandbox until the sandbox closes.  RLIMIT_MSGQUEUE
    (800 KiB) is counted per user namespace and up to its owner, root; the
    queues stay in the sandbox's IPC namespace after the exec that made them
    ends: six queues of 80 KiB and one exec are enough."""
    with Sandbox(rootfs=busybox_rootfs, limits=SAFE) as a, Sandbox(rootfs=busybox_rootfs, limits=SAFE) as b:
        for sb in (a, b):
            sb.files.write_bytes(HELPER, hog, mode=0o755)
        took = counts(a.exec([HELPER, "mq", "64"], timeout=10).stdout)
        assert took["ok"] > 0, took
        if who == "another sandbox":
            other = counts(b.exec([HELPER, "mq", "1"], timeout=10).stdout)
            assert other["ok"] == 1, (
                f"another sandbox got {os.strerror(other['errno'])}: one exec made queues"
            )
        else:
            err = host_mq_open()
            assert err == 0, f"the host's root got {os.strerror(err)} from mq_open while a sandbox runs"


def test_another_sandbox_keeps_full_sized_pipes(cgroups, busybox_rootfs, hog) -> None:
    """The attacker gets: every pipe another sandbox makes holds 8 KiB
    instead of 64 KiB (fs.pipe-user-pages-soft is per host user, and with
    one id range for all, idmap="shared", every sandbox is that user): a program that
    writes 64 KiB into a pipe before it reads deadlocks there, and is judged
    a timeout."""
    with Sandbox(rootfs=busybox_rootfs, limits=SAFE) as a, Sandbox(rootfs=busybox_rootfs, limits=SAFE) as b:
        for sb in (a, b):
            sb.files.write_bytes(HELPER, hog, mode=0o755)
        fresh = counts(b.exec([HELPER, "pipe", "1"], timeout=10).stdout)["size"]
        # 1,200 pipes of 16 pages: over the soft limit of 16,384 pages
        p = a.spawn(["sh", "-c", f"ulimit -n 4096 && exec {HELPER} pipe 1200 hold"])
        try:
            assert p.stdout is not None
            took = counts(p.stdout.readline())
            assert took["ok"] == 1200, took
            size = counts(b.exec([HELPER, "pipe", "1"], timeout=10).stdout)["size"]
        finally:
            p.kill()
            p.wait()
        assert size == fresh, f"another sandbox's pipes shrank from {fresh} to {size} bytes"


# -- memory an exec leaves behind --------------------------------------------------------------


def test_sysv_shm_left_by_execs_stays_within_the_exec_memory_limit(cgroups, busybox_rootfs, hog) -> None:
    """The attacker gets: host memory without bound under memory= limits
    set per exec.  SysV shared memory outlives the exec that touched it (it
    belongs to the sandbox's IPC namespace, with the kernel's shmall of ~16
    EiB), so each exec leaves up to its memory limit behind and the next
    starts afresh: a judge running every test under memory="32M" holds
    N x 32 MiB of the host's RAM until the sandbox closes.  (SysV message
    queues likewise.)  Now the namespace's shmall is the sandbox's disk size:
    what execs leave of it is bounded as /dev/shm is."""
    with Sandbox(rootfs=busybox_rootfs, disk="48M") as sb:
        sb.files.write_bytes(HELPER, hog, mode=0o755)
        for _ in range(3):
            r = sb.exec([HELPER, "shm", "24"], limits=Limits(memory="32M", pids=64, timeout=10))
            assert r.reason == "exited", r
        table = sb.exec(["cat", "/proc/sysvipc/shm"], timeout=10).stdout.decode().splitlines()[1:]
        left = sum(int(row.split()[3]) for row in table if row.strip())
        assert left <= 48 << 20, f"{left >> 20} MiB of SysV shm outlived execs, in a sandbox of disk=48M"
