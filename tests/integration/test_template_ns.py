"""The template mount namespace (sandbox/_cext/launch_unsafe.c): every
init's mount namespace is a copy of it, never of the host's, so that a
start costs the same on a host with hundreds of mounts.  It holds nothing of
the host but its null device and a procfs.  The init stays the launching
process's child (CLONE_PARENT from the helper), and a thread that launches
without the helper (its fs state its own: the warm pool's) comes back to
its own mount namespace and cwd."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

import sandbox
from sandbox import LaunchError, Sandbox, _core, warm
from tests.conftest import have, require

MNTNS_OF_FD = textwrap.dedent(
    """
    import ctypes, sys
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(int(sys.argv[1]), 0x00020000) != 0:  # CLONE_NEWNS
        raise SystemExit(f"setns: errno {ctypes.get_errno()}")
    sys.stdout.write(open("/proc/self/mountinfo").read())
    """
)


def _mounts(mountinfo: str) -> dict[str, tuple[str, str]]:
    """mount point -> (file system type, per-mount options)"""
    out = {}
    for line in mountinfo.splitlines():
        f = line.split()
        sep = f.index("-")
        out[f[4]] = (f[sep + 1], f[5])
    return out


def _template_mounts() -> dict[str, tuple[str, str]]:
    fd = _core._template_mntns()
    r = subprocess.run(
        [sys.executable, "-c", MNTNS_OF_FD, str(fd)],
        pass_fds=(fd,),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    return _mounts(r.stdout)


def test_the_template_holds_only_what_an_init_needs(sandbox_host) -> None:
    mounts = _template_mounts()
    assert set(mounts) == {"/", "/proc", "/dev/null"}, mounts
    fstype, opts = mounts["/"]
    assert fstype == "tmpfs" and "ro" in opts.split(","), mounts["/"]
    assert mounts["/proc"][0] == "proc"


def test_the_init_is_the_launching_process_child(sandbox_host, busybox_rootfs: Path) -> None:
    """Cold (through the helper) and warm (the pool's thread, directly)."""
    warm.shutdown()
    try:
        for _ in range(3):  # a spec is warmed from its second start on
            with Sandbox(rootfs=busybox_rootfs) as sb:
                status = Path(f"/proc/{sb.pid}/status").read_text()
                ppid = int(next(ln for ln in status.splitlines() if ln.startswith("PPid:")).split()[1])
                assert ppid == os.getpid(), (sb._was_warm, status)
                assert sb.exec(["true"]).exit_code == 0
    finally:
        warm.shutdown()


def test_a_thread_with_its_own_fs_comes_back(sandbox_host, busybox_rootfs: Path, tmp_path: Path) -> None:
    out: dict[str, object] = {}

    def run() -> None:
        try:
            assert _core.own_fs()
            os.chdir(tmp_path)  # this thread's own cwd now
            with Sandbox(rootfs=busybox_rootfs, warm=False) as sb:
                out["exit"] = sb.exec(["true"]).exit_code
            out["direct"] = _core.launches_directly()
            out["cwd"] = os.getcwd()
            out["mntns"] = os.readlink("/proc/thread-self/ns/mnt")
            out["netns"] = os.readlink("/proc/thread-self/ns/net")
        except BaseException as e:  # reported below
            out["error"] = e

    with Sandbox(rootfs=busybox_rootfs, warm=False):
        pass  # the package's threads run now: not started from that thread, sharing its fs state
    assert not _core.launches_directly()
    cwd = os.getcwd()
    t = threading.Thread(target=run)
    t.start()
    t.join(60)
    assert out == {
        "exit": 0,
        "direct": True,
        "cwd": str(tmp_path),
        "mntns": os.readlink("/proc/thread-self/ns/mnt"),
        "netns": os.readlink("/proc/thread-self/ns/net"),
    }
    assert os.getcwd() == cwd  # the main thread's never moved


# Run in a private mount namespace made for it (unshare -m), with many mounts:
# sandboxes from there, cold and warm.
IN_PRIVATE_NS = textwrap.dedent(
    """
    import os, subprocess, sys, threading
    from sandbox import Sandbox, _core
    rootfs, mntns_of_fd = sys.argv[1], sys.argv[2]
    for i in range(4):
        with Sandbox(rootfs=rootfs) as sb:
            assert sb.exec(["true"]).exit_code == 0
    print("warm" if sb._was_warm else "cold", len(open("/proc/self/mountinfo").readlines()))
    fd = _core._template_mntns()
    r = subprocess.run([sys.executable, "-c", mntns_of_fd, str(fd)], pass_fds=(fd,),
                       capture_output=True, text=True, check=True)
    print("template", len(r.stdout.splitlines()))
    # the pool's thread, which joined the template for each launch: back
    # in this process's namespace and cwd
    tid = next(t.native_id for t in threading.enumerate() if t.name == "sandbox-warm")
    task = f"/proc/self/task/{tid}"
    print("back", os.readlink(f"{task}/ns/mnt") == os.readlink("/proc/self/ns/mnt"),
          os.path.samefile(f"{task}/cwd", "."))
    """
)


def _private_ns(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    require(have("unshare"), "no unshare(1) (util-linux)")
    return subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_many_host_mounts_are_not_copied(sandbox_host, busybox_rootfs: Path, tmp_path: Path) -> None:
    many = tmp_path / "many"
    for i in range(200):
        (many / str(i)).mkdir(parents=True)
    r = _private_ns(
        'for d in "$1"/*; do mount -t tmpfs many-host-mounts "$d" || exit 1; done; '
        'cd "$1/0" && exec "$2" -c "$3" "$4" "$5"',
        str(many),
        sys.executable,
        IN_PRIVATE_NS,
        str(busybox_rootfs),
        MNTNS_OF_FD,
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split("\n")
    kind, count = lines[0].split()
    assert kind == "warm" and int(count) > 200, r.stdout  # this namespace does have them
    assert lines[1:3] == ["template 3", "back True True"], r.stdout


@pytest.mark.parametrize("cold", [True, False])
def test_a_lost_template_fd_is_made_again(sandbox_host, busybox_rootfs: Path, cold: bool) -> None:
    """Host code that closed or reused the number, not knowing it was ours."""
    old = _core._template_mntns()
    os.close(old)
    null = os.open("/dev/null", os.O_RDONLY)  # most likely the same number
    try:
        with Sandbox(rootfs=busybox_rootfs, warm=not cold) as sb:
            assert sb.exec(["true"]).exit_code == 0
        assert os.readlink(f"/proc/self/fd/{null}") == "/dev/null"
    finally:
        os.close(null)


def _children() -> set[int]:
    out: set[int] = set()
    for tid in os.listdir("/proc/self/task"):
        try:
            out |= {int(p) for p in Path(f"/proc/self/task/{tid}/children").read_text().split()}
        except FileNotFoundError:
            pass  # a thread that ended meanwhile (its children are another's now)
    return out


def _fds() -> set[int]:
    return {int(n) for n in os.listdir("/proc/self/fd")}


def _launch_in(rootfs: Path, thread: str, direct: bool | None = None, **kw: object) -> BaseException | None:
    """_core.launch of the busybox spec with `kw` changed, from this thread
    (through the helper) or from a thread with fs state of its own
    (clone_direct); the exception it raised.  `direct`: whether that
    thread's launches still skip the helper after."""
    from sandbox import layout
    from sandbox.spec import Spec

    spec = Sandbox(rootfs=rootfs)._spec
    assert isinstance(spec, Spec)
    plan, trees = layout.build(spec)
    args: dict[str, object] = {"uid_map": "0 1048576 65536\n", "gid_map": "0 1048576 65536\n", **kw}
    got: list[BaseException | None] = []
    directly: list[bool] = []

    def run() -> None:
        if thread == "own-fs":
            assert _core.own_fs()
        try:
            launched = _core.launch(plan, trees, **args)  # type: ignore[arg-type]
        except BaseException as e:
            got.append(e)
        else:
            _core.reap(launched)
            got.append(None)
        directly.append(_core.launches_directly())

    if thread == "own-fs":
        t = threading.Thread(target=run)
        t.start()
        t.join(60)
    else:
        run()
    if direct is not None:
        assert directly == [direct]
    return got[0]


@pytest.mark.parametrize("thread", ["helper", "own-fs"])
@pytest.mark.parametrize(
    ("kw", "step"),
    [
        # not a network namespace (a pooled one's number reused): a new one
        ({"netns_fd": 0}, None),
        ({"uid_map": "0 1048576 65536\n0 1048576 65536\n"}, "writing the id maps"),  # overlapping lines
    ],
)
def test_a_failed_launch_leaves_nothing(
    sandbox_host, busybox_rootfs: Path, thread: str, kw: dict[str, object], step: str | None
) -> None:
    with Sandbox(rootfs=busybox_rootfs, warm=False):
        pass  # the package's threads and kept fds exist before the counts
    sandbox.wait_closed()
    children, fds = _children(), _fds()
    err = _launch_in(busybox_rootfs, thread, **kw)
    if step is None:
        assert err is None
    else:
        assert isinstance(err, LaunchError) and err.step == step, err
    assert _children() == children
    assert _fds() == fds


@pytest.mark.parametrize("thread", ["helper", "own-fs"])
def test_a_template_that_is_not_one_is_made_again(sandbox_host, busybox_rootfs: Path, thread: str) -> None:
    """A kept fd that passes the (st_dev, st_ino) check but is no mount
    namespace (nsfs inode numbers are shared by every type): the launch
    that fails to join it makes a new template and succeeds."""
    _core._template_mntns()
    sandbox.wait_closed()
    fd = os.open("/proc/self/ns/net", os.O_RDONLY)
    st = os.fstat(fd)
    kept = _core._mntns
    _core._mntns = _core._KeptNs(fd, (st.st_dev, st.st_ino))
    try:
        assert _launch_in(busybox_rootfs, thread, direct=thread == "own-fs") is None
        assert _core._mntns is not None and _core._mntns.fd != fd
    finally:
        os.close(fd)
        if kept is not None:
            os.close(kept.fd)
