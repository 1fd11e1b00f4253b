"""What comes back to the host from a running sandbox is untrusted: a hostile
program runs as root in there, may rewrite any file, fork, flood its output
and race the init.  Each test here plays that program and asserts that the
host side stays bounded and in charge.

The tests whose host call would eat memory without end run it in a child
interpreter with RLIMIT_AS, so that a failure is a MemoryError there, not
the OOM killer here."""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sandbox import ExecError, FileOpError, Sandbox
from tests.conftest import require, sh_ok

pytestmark = pytest.mark.integration

PROJECT = Path(__file__).resolve().parent.parent.parent
CHILD_AS = 2 << 30  # address space of the child interpreter: ~250 MiB of it is its own
TIB = 1 << 40


def run_bounded(rootfs: Path, body: str, sandbox_kw: str = "") -> dict[str, object]:
    """Run `body` (indented under `with Sandbox(...) as sb:`) in a child
    interpreter whose address space is capped at CHILD_AS once the sandbox
    runs; the JSON object it prints last, under "outcome"."""
    code = textwrap.dedent(
        """\
        import errno, json, resource, sys
        from pathlib import Path
        import sandbox
        from sandbox import Limits, Sandbox, SandboxError

        def report(**kw):
            print(json.dumps(kw), flush=True)

        with Sandbox(rootfs=sys.argv[1], limits=Limits(memory="256M", pids=64){kw}) as sb:
            resource.setrlimit(resource.RLIMIT_AS, ({cap}, {cap}))
            try:
        {body}
            except SandboxError as e:
                report(outcome="SandboxError", type=type(e).__name__,
                       errno=getattr(e, "errno", None), text=str(e))
            except MemoryError:
                report(outcome="MemoryError")
            except OSError as e:
                report(outcome="OSError", errno=e.errno, text=str(e))
            resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        sandbox.wait_closed()
        """
    ).format(kw=sandbox_kw, cap=CHILD_AS, body=textwrap.indent(textwrap.dedent(body), " " * 8))
    r = subprocess.run(
        [sys.executable, "-c", code, str(rootfs)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=PROJECT,
    )
    lines = [x for x in r.stdout.splitlines() if x.startswith("{")]
    assert lines, f"the child printed no outcome (rc {r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
    return json.loads(lines[-1])  # type: ignore[no-any-return]


@pytest.fixture
def hostile_bin(tmp_path: Path):
    """hostile_bin(C source) -> the static binary's bytes."""
    require(shutil.which("gcc"), "no gcc to build the hostile programs")

    def build(src: str) -> bytes:
        c = tmp_path / "h.c"
        out = tmp_path / "h"
        c.write_text(src)
        r = subprocess.run(
            ["gcc", "-static", "-O2", "-o", str(out), str(c)], capture_output=True, text=True, timeout=120
        )
        require(r.returncode == 0 or "cannot find -lc" not in r.stderr, "no static libc (libc6-dev)")
        assert r.returncode == 0, r.stderr
        return out.read_bytes()

    return build


# -- the files API -----------------------------------------------------------------


def test_read_bytes_of_a_sparse_file_is_bounded(sandbox_host: None, busybox_rootfs: Path) -> None:
    # A sparse file costs the sandbox no disk (tmpfs allocates nothing for a
    # hole), whatever its `disk=` limit; read_bytes() reads all of it into
    # host memory (files._read_all has no bound).  What an attacker gets: the
    # caller's process, and with it the host, out of memory with one
    # `truncate -s 1T` on a file the host reads back (a result file, or
    # /etc/passwd for a user= lookup).  Safe: a FileOpError (EFBIG) that names
    # the size limit to raise, before reading past it.
    out = run_bounded(
        busybox_rootfs,
        f"""
        sb.exec(["truncate", "-s", "{TIB}", "/tmp/result"], timeout=30).check()
        data = sb.files.read_bytes("/tmp/result")
        report(outcome="read", size=len(data))
        """,
    )
    assert out["outcome"] == "SandboxError", out
    assert out["type"] == "FileOpError" and out["errno"] == errno.EFBIG, out


def test_get_of_a_sparse_file_is_bounded(sandbox_host: None, busybox_rootfs: Path, tmp_path: Path) -> None:
    # The same through get() of a directory: each file is read whole into
    # memory, then written whole to the host (a 1 TiB file of zeros, not
    # sparse there).  What an attacker gets: the host's memory, or its disk.
    dst = tmp_path / "out"
    out = run_bounded(
        busybox_rootfs,
        f"""
        sb.exec(["sh", "-c", "mkdir /tmp/d && echo hi > /tmp/d/a && truncate -s {TIB} /tmp/d/b"],
                timeout=30).check()
        sb.files.get("/tmp/d", "{dst}")
        report(outcome="copied")
        """,
    )
    assert out["outcome"] == "SandboxError", out
    assert out["type"] == "FileOpError" and out["errno"] == errno.EFBIG, out
    assert not (dst / "b").exists() or (dst / "b").stat().st_size < TIB


def test_get_does_not_multiply_hardlinks(sandbox_host: None, busybox_rootfs: Path, tmp_path: Path) -> None:
    # One file linked N times costs the sandbox its size once; get() writes
    # it N times on the host (no check of st_nlink, no total budget).  What
    # an attacker gets: host disk in any multiple of its own `disk=` (here
    # 64 MiB out of a 16 MiB sandbox; a million links of a 16 MiB file fill
    # any disk).  Safe: get() writes at most what the sandbox could hold
    # (links made again as links, or a total budget), or raises FileOpError.
    dst = tmp_path / "out"
    with Sandbox(rootfs=busybox_rootfs, disk="16M") as sb:
        sh_ok(
            sb,
            "mkdir /tmp/d && head -c 1048576 /dev/urandom > /tmp/d/f0 && "
            "i=1; while [ $i -lt 64 ]; do ln /tmp/d/f0 /tmp/d/f$i; i=$((i+1)); done",
        )
        try:
            sb.files.get("/tmp/d", dst)
        except FileOpError:
            return
    written: dict[tuple[int, int], int] = {}
    for p in dst.rglob("*"):
        st = p.lstat()
        if p.is_file():
            written[(st.st_dev, st.st_ino)] = st.st_size
    assert sum(written.values()) <= 16 << 20, f"{sum(written.values())} bytes on the host from a 16M sandbox"


# -- exec output ---------------------------------------------------------------------


def test_exec_output_is_bounded_by_default(sandbox_host: None, busybox_rootfs: Path) -> None:
    # Limits.output is None unless the caller sets it: exec() keeps all of
    # stdout in host memory (execio.c grows its buffer without a cap).  What
    # an attacker gets: `cat /dev/zero` fills the host's memory at pipe
    # speed (~0.5 GB/s here) for as long as the timeout allows; with none,
    # until the OOM killer.  Safe: a default cap, so that the result comes
    # back truncated (reason "output_limit"), not an ENOMEM OSError.
    out = run_bounded(
        busybox_rootfs,
        """
        r = sb.exec(["cat", "/dev/zero"], timeout=120)
        report(outcome="result", reason=r.reason, truncated=r.truncated, size=len(r.stdout))
        """,
    )
    assert out["outcome"] == "result", out
    assert out["truncated"] and out["reason"] == "output_limit", out


# -- the init ------------------------------------------------------------------------------

TAKE_INIT = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(void)
{
    int pfd = (int)syscall(SYS_pidfd_open, 1, 0);
    int ctl = pfd < 0 ? -1 : (int)syscall(SYS_pidfd_getfd, pfd, 3, 0); /* the init's control socket */
    int e1 = ctl < 0 ? errno : 0;
    int mem = open("/proc/1/mem", O_RDWR);
    int e2 = mem < 0 ? errno : 0;
    long t = ptrace(PTRACE_SEIZE, 1, 0, 0);
    int e3 = t < 0 ? errno : 0;
    printf("{\"getfd\": %d, \"mem\": %d, \"seize\": %d}\n", e1, e2, e3);
    return 0;
}
"""


def test_container_root_without_capabilities_cannot_take_the_init(
    sandbox_host: None, busybox_rootfs: Path, hostile_bin
) -> None:
    # The init is container root too, with the same ids as a command run as
    # root, and holds the control socket to the host.  Where the profile
    # lets ptrace and pidfd_getfd through (here seccomp=None; also a custom
    # profile), two things keep a command without capabilities off it: the
    # capability check of ptrace (the tracer's permitted set must cover the
    # tracee's: the init's is full) and the init being not dumpable.  What an
    # attacker would get: pidfd_getfd(init, 3), the control socket (forged
    # exit records), and /proc/1/mem, the init's memory and every capability
    # in the namespace.  (cap_add=["CAP_SYS_PTRACE"] passes both checks, and
    # gives the init away: README, "Secure by default".)
    prog = hostile_bin(TAKE_INIT)
    with Sandbox(rootfs=busybox_rootfs, seccomp=None) as sb:
        sb.files.write_bytes("/tmp/take", prog, mode=0o755)
        got = json.loads(sh_ok(sb, "/tmp/take"))
    assert got == {"getfd": errno.EPERM, "mem": errno.EACCES, "seize": errno.EPERM}, got


# C for the programs below: `path` (the program the host runs next) held
# open for writing, its execve fails with ETXTBSY, which the init's child
# retries for ~50 ms after it dropped its capabilities and before it leaves
# the init's memory; returns the pid that child will get, once "ready" is out.
NEXT_CHILD_HELD = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
static pid_t hold_and_find_next(const char *path)
{
    if (open(path, O_WRONLY) < 0)
        _exit(1);
    pid_t p = fork();
    if (p == 0)
        _exit(0);
    waitpid(p, 0, 0);
    printf("ready\n");
    fflush(stdout);
    return p + 1; /* pids of a namespace come in order: the init's next child */
}
"""

# compiled after NEXT_CHILD_HELD
RACE_VFORK_CHILD = r"""
#include <sys/ptrace.h>
int main(int argc, char **argv)
{
    pid_t next = hold_and_find_next(argv[1]);
    while (kill(next, 0) < 0 && errno == ESRCH)
        ;
    int attached = 0;
    for (;;) {
        if (ptrace(PTRACE_SEIZE, next, 0, 0) == 0) {
            attached = 1;
            break;
        }
        if (errno == ESRCH)
            break;
        char path[64], buf[512];
        snprintf(path, sizeof path, "/proc/%d/stat", next);
        int f = open(path, O_RDONLY);
        if (f < 0)
            break;
        int n = (int)read(f, buf, sizeof buf - 1);
        close(f);
        if (n <= 0)
            break;
        buf[n] = 0;
        char *q = strrchr(buf, ')');
        if (q && (q[2] == 'Z' || q[2] == 'X'))
            break;
    }
    int same_mm = 0;
    if (attached) {
        /* the child's mappings are the init's own (CLONE_VM): its memory is the init's */
        char path[64], buf[4096];
        snprintf(path, sizeof path, "/proc/%d/maps", next);
        int f = open(path, O_RDONLY);
        int n = f < 0 ? -1 : (int)read(f, buf, sizeof buf - 1);
        if (n > 0) {
            buf[n] = 0;
            same_mm = strstr(buf, "sandbox-init") != NULL;
        }
        ptrace(PTRACE_DETACH, next, 0, 0);
    }
    printf("{\"attached\": %d, \"init_memory\": %d}\n", attached, same_mm);
    return 0;
}
"""


def test_exec_child_is_never_traceable_in_the_init_memory(
    sandbox_host: None, busybox_rootfs: Path, hostile_bin
) -> None:
    # Each exec's child is a CLONE_VM child of the init: until its execve
    # it runs in the init's memory.  It drops its capabilities before the
    # execve, and from then on a process of the same uid without any
    # capability may ptrace it wherever the profile lets ptrace through
    # (seccomp=None here; also any custom profile that allows ptrace, as
    # Docker's does): the init was dumpable, and nothing else stood in the
    # way (now it is not: init.c, start_c).  The ETXTBSY retries (init.c, child_main) hold the child there for
    # ~50 ms on demand.  What an attacker with no capability gets: writes
    # into the init's memory (PTRACE_POKEDATA), so the init's code: its
    # capabilities, its control socket, every later request.  Safe: the
    # child is never attachable while it shares the init's memory.
    prog = hostile_bin(NEXT_CHILD_HELD + RACE_VFORK_CHILD)
    with Sandbox(rootfs=busybox_rootfs, seccomp=None) as sb:
        sb.files.write_bytes("/tmp/race", prog, mode=0o755)
        sh_ok(sb, "cp /bin/busybox /tmp/victim")
        p = sb.spawn(["/tmp/race", "/tmp/victim"], timeout=60)
        assert p.stdout is not None
        assert p.stdout.readline() == b"ready\n"
        try:
            sb.exec(["/tmp/victim", "true"], timeout=30)
        except ExecError:
            pass  # ETXTBSY: the point was the child's time before it
        r = p.wait(timeout=60)
    got = json.loads(r.stdout_text.strip().splitlines()[-1])
    assert got["attached"] == 0, got


# compiled after NEXT_CHILD_HELD
STOP_NEXT_CHILD = r"""
/* The init's next child gets SIGSTOP as soon as it exists (in its ETXTBSY
 * retries).  Prints whether the signal went. */
int main(int argc, char **argv)
{
    pid_t next = hold_and_find_next(argv[1]);
    int rc;
    while ((rc = kill(next, SIGSTOP)) < 0 && errno == ESRCH)
        ;
    printf("stopped %d\n", rc == 0);
    return 0;
}
"""


def test_a_child_stopped_before_its_execve_does_not_freeze_the_init(
    sandbox_host: None, busybox_rootfs: Path, hostile_bin
) -> None:
    """An exec's child runs in the init's memory until its execve, and the
    init waits for that.  A command of the same uid may SIGSTOP the child
    meanwhile: as a vfork it then held the init for good (every later
    request, the exec's own timeout kill, went unanswered: ProtocolError
    after 30 s).  Now the init kills a child stopped there and the exec
    fails saying why; the init answers the next one."""
    prog = hostile_bin(NEXT_CHILD_HELD + STOP_NEXT_CHILD)
    with Sandbox(rootfs=busybox_rootfs) as sb:
        sb.files.write_bytes("/tmp/stop", prog, mode=0o755)
        sh_ok(sb, "cp /bin/busybox /tmp/victim")
        p = sb.spawn(["/tmp/stop", "/tmp/victim"], timeout=60)
        assert p.stdout is not None
        assert p.stdout.readline() == b"ready\n"
        with pytest.raises(ExecError) as got:
            sb.exec(["/tmp/victim", "true"], timeout=30)
        out = p.wait(timeout=60).stdout_text
        if "stopped 1" in out:
            assert got.value.stage == "stopped", got.value
            assert "SIGSTOP" in str(got.value), got.value
        else:  # the signal came after the child was gone: its ETXTBSY then
            assert got.value.errno == errno.ETXTBSY, (got.value, out)
        r = sb.exec(["echo", "still here"], timeout=30)
        assert r.ok and r.stdout == b"still here\n", r
