"""Leak check: what sandboxes may leave behind on the host, snapshotted
before and compared after (a test, the whole pytest session, or a CI run).

Checked, each as a set of "keys" so that a snapshot is plain JSON:

  proc     processes in another pid namespace than ours, and any process
           running the sandbox init (/proc/PID/exe is /memfd:sandbox-init)
  mount    lines of /proc/self/mountinfo
  link     network links (`ip -o link`)
  cgroup   directories under /sys/fs/cgroup/*/, down to depth 6
  state    entries of $SANDBOX_HOME/run (default /var/lib/sandbox/run), but
           run/net and run/ids; and the held leases of
           /var/lib/sandbox/run/ids (one per host, whatever SANDBOX_HOME
           says), the id ranges of running sandboxes (a released lease's
           file stays, unlocked: its mtime is the release time)
  net      what /var/lib/sandbox/run/net holds (one per host, whatever
           SANDBOX_HOME says): networks, their leases and files
  nft      nftables tables named "sandbox" (ours)

Only what is new since the snapshot counts: the host may run other
containers.  Inside a test session only this process's own count (its
descendants', and cgroups named after them): other suites may run on the
same host at once; the command line counts everyone's.  A zombie whose
parent is the host's PID 1 is dead and waits only for that init to reap
it: not a leak.  Patterns in
$SANDBOX_LEAKCHECK_IGNORE (space separated, fnmatch, against "kind:key")
are left out; the default ignores the per-command cgroups of this
machine's process manager (cgroup:*/process_api/*), but never a cgroup of
ours (a "sandbox-" name), wherever it is.

Command line (CI runs it around the whole suite):

    python -m tests.leakcheck snapshot FILE
    python -m tests.leakcheck compare FILE [--grace SECONDS]

`compare` exits 1 and prints every leftover when something leaked.
"""

from __future__ import annotations

import argparse
import fcntl
import fnmatch
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

KINDS = ("proc", "mount", "link", "cgroup", "state", "net", "nft")
NET_DIR = "net"
IDS_DIR = "ids"  # left out of $SANDBOX_HOME/run (older versions kept id leases there)
# sandbox/idranges.py's ROOT: leased id ranges, one dir per host
IDS_ROOT = "/var/lib/sandbox/run/ids"
NFT_TABLE = "sandbox"
CGROUP_ROOT = "/sys/fs/cgroup"
CGROUP_DEPTH = 6
DEFAULT_IGNORE = "cgroup:*/process_api/*"
INIT_EXE = "/memfd:sandbox-init"


def state_dir() -> str:
    home = os.environ.get("SANDBOX_HOME")
    return os.path.join(home, "run") if home else "/var/lib/sandbox/run"


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def _readlink(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    ppid: int
    state: str
    start: int  # clock ticks since boot: with the pid, identifies the process
    pidns: str | None
    exe: str | None
    cmdline: str

    @property
    def key(self) -> str:
        return f"{self.pid}@{self.start}"

    def describe(self) -> str:
        return (
            f"pid {self.pid} (ppid {self.ppid}, state {self.state}, pidns {self.pidns}, "
            f"exe {self.exe!r}, cmdline {self.cmdline!r})"
        )


def proc_info(pid: int) -> ProcInfo | None:
    """What /proc says about one process, or None if it is gone."""
    stat = _read(f"/proc/{pid}/stat")
    if stat is None:
        return None
    # The command name may hold spaces and parentheses: split after the last ')'.
    rest = stat[stat.rfind(b")") + 2 :].split()
    try:
        state, ppid, start = rest[0].decode(), int(rest[1]), int(rest[19])
    except (IndexError, ValueError):
        return None
    cmd = _read(f"/proc/{pid}/cmdline") or b""
    return ProcInfo(
        pid,
        ppid,
        state,
        start,
        _readlink(f"/proc/{pid}/ns/pid"),
        _readlink(f"/proc/{pid}/exe"),
        cmd.replace(b"\0", b" ").decode("utf-8", "replace").strip()[:200],
    )


def all_pids() -> list[int]:
    return [int(n) for n in os.listdir("/proc") if n.isdigit()]


def is_sandbox_proc(p: ProcInfo, own_ns: str | None) -> bool:
    if p.exe is not None and p.exe.startswith(INIT_EXE):
        return True
    return p.pidns is not None and own_ns is not None and p.pidns != own_ns


# Whose leftovers count: inside a test session, only those of this process
# and its children (other suites may run on the same host at the same
# time); the command line (`compare` after a whole run) counts everyone's.
_scope: list[int | None] = [os.getpid()]


def _descends(pid: int, ancestor: int) -> bool:
    for _ in range(64):
        if pid == ancestor:
            return True
        p = proc_info(pid)
        if p is None or p.ppid <= 1:
            return False
        pid = p.ppid
    return False


def _foreign(kind: str, key: str) -> bool:
    """A process or cgroup of another live process tree than ours."""
    scope = _scope[0]
    if scope is None or kind != "cgroup":
        return False
    m = re.search(r"sandbox-(\d+)-", key)
    if m is None:
        return False
    owner = int(m.group(1))
    return proc_info(owner) is not None and not _descends(owner, scope)


def sandbox_procs() -> dict[str, ProcInfo]:
    own = _readlink("/proc/self/ns/pid")
    scope = _scope[0]
    out = {}
    for pid in all_pids():
        p = proc_info(pid)
        if p is None or not is_sandbox_proc(p, own):
            continue
        if scope is not None and not _descends(p.pid, scope):
            continue  # another suite's
        if p.state == "Z" and p.ppid == 1:
            continue  # dead; the host's init has yet to reap it
        out[p.key] = p
    return out


def pidns_members(ns: str) -> list[ProcInfo]:
    """Every live (non-zombie) process whose pid namespace is `ns`."""
    out = []
    for pid in all_pids():
        p = proc_info(pid)
        if p is not None and p.pidns == ns and p.state != "Z":
            out.append(p)
    return out


def _links() -> list[str]:
    try:
        text = subprocess.run(
            ["ip", "-o", "link"], capture_output=True, text=True, check=True, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError):
        try:
            return sorted(os.listdir("/sys/class/net"))
        except OSError:
            return []
    names = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            names.append(f"{parts[0].strip()}:{parts[1].strip()}")
    return names


def _cgroups() -> list[str]:
    out = []
    try:
        controllers = sorted(os.listdir(CGROUP_ROOT))
    except OSError:
        return out
    if os.path.exists(os.path.join(CGROUP_ROOT, "cgroup.controllers")):
        controllers = [""]  # cgroup v2 mounted right there: one tree, walked from its root
    for c in controllers:
        top = os.path.join(CGROUP_ROOT, c).rstrip("/")
        if not os.path.isdir(top) or os.path.islink(top):
            continue
        for dirpath, dirnames, _ in os.walk(top, onerror=lambda e: None):
            depth = dirpath[len(top) :].count("/")
            if depth >= CGROUP_DEPTH:
                dirnames[:] = []
            for d in dirnames:
                out.append(os.path.relpath(os.path.join(dirpath, d), CGROUP_ROOT))
    return out


def _mounts() -> list[str]:
    data = _read("/proc/self/mountinfo") or b""
    return data.decode("utf-8", "replace").splitlines()


def _state() -> list[str]:
    try:
        top = sorted(n for n in os.listdir(state_dir()) if n not in (NET_DIR, IDS_DIR))
    except OSError:
        return []
    try:
        names = sorted(os.listdir(IDS_ROOT))
    except OSError:
        return top
    return top + [f"{IDS_DIR}/{n}" for n in names if lease_held(os.path.join(IDS_ROOT, n))]


def lease_held(path: str) -> bool:
    """A lease some process holds.  Probed with a shared lock of a moment:
    a lease() of that block meanwhile takes another one, nothing worse."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


# sandbox/network/state.py's ROOT: one per host, whatever SANDBOX_HOME says
NET_ROOT = "/var/lib/sandbox/run/net"


def _net_state() -> list[str]:
    """Entries of run/net and of each network's dir and leases, but the lock."""
    top = NET_ROOT
    out = []
    for dirpath, dirnames, filenames in os.walk(top, onerror=lambda e: None):
        rel = os.path.relpath(dirpath, top)
        for n in dirnames + filenames:
            if rel == "." and n == ".lock":
                continue
            out.append(n if rel == "." else f"{rel}/{n}")
    return sorted(out)


def _nft_tables() -> list[str]:
    try:
        text = subprocess.run(
            ["nft", "list", "tables"], capture_output=True, text=True, check=True, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return sorted(ln.strip() for ln in text.splitlines() if ln.split()[-1:] == [NFT_TABLE])


@dataclass
class Snapshot:
    keys: dict[str, set[str]] = field(default_factory=dict)
    procs: dict[str, str] = field(default_factory=dict)  # proc key -> description

    def to_json(self) -> str:
        return json.dumps(
            {"keys": {k: sorted(v) for k, v in self.keys.items()}, "procs": self.procs}, indent=1
        )

    @classmethod
    def from_json(cls, text: str) -> Snapshot:
        d = json.loads(text)
        return cls({k: set(v) for k, v in d["keys"].items()}, dict(d.get("procs", {})))


def quiesce() -> None:
    """In a process that uses the SDK: stop the sandboxes it set up ahead of
    time, let its cgroup thread finish removals and drop the groups it makes
    ahead of time, so that only what a sandbox left behind shows."""
    reaper = sys.modules.get("sandbox.reaper")
    if reaper is not None:
        reaper.drain()  # closed sandboxes die in the background
    warm = sys.modules.get("sandbox.warm")
    if warm is not None:
        warm.shutdown()  # its sandboxes are set up ahead of time, not left behind
    cg = sys.modules.get("sandbox.cgroup")
    if cg is not None:
        cg.shutdown()


def snapshot() -> Snapshot:
    quiesce()
    procs = sandbox_procs()
    return Snapshot(
        keys={
            "proc": set(procs),
            "mount": set(_mounts()),
            "link": set(_links()),
            "cgroup": set(_cgroups()),
            "state": set(_state()),
            "net": set(_net_state()),
            "nft": set(_nft_tables()),
        },
        procs={k: p.describe() for k, p in procs.items()},
    )


def _ignore_patterns() -> list[str]:
    return os.environ.get("SANDBOX_LEAKCHECK_IGNORE", DEFAULT_IGNORE).split()


def diff(before: Snapshot, after: Snapshot) -> list[str]:
    """One line per thing in `after` that is not in `before`."""
    pats = _ignore_patterns()
    out = []
    for kind in KINDS:
        for key in sorted(after.keys.get(kind, set()) - before.keys.get(kind, set())):
            ours = kind == "cgroup" and "sandbox-" in key
            if not ours and any(fnmatch.fnmatchcase(f"{kind}:{key}", p) for p in pats):
                continue
            if _foreign(kind, key):
                continue
            text = after.procs.get(key, key) if kind == "proc" else key
            out.append(f"{kind}: {text}")
    return out


def leaks(before: Snapshot, grace: float = 2.0) -> list[str]:
    """What is new since `before`; polls for up to `grace` seconds, so that
    processes and mounts already on their way out are not reported."""
    deadline = time.monotonic() + grace
    while True:
        found = diff(before, snapshot())
        if not found or time.monotonic() >= deadline:
            return found
        time.sleep(0.05)


def report(found: Iterable[str]) -> str:
    lines = list(found)
    return f"leak check: {len(lines)} leftover(s) on the host:\n" + "\n".join(f"  {x}" for x in lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.leakcheck", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("snapshot", help="record the host's state into FILE")
    s.add_argument("file")
    c = sub.add_parser("compare", help="compare the host's state with FILE; exit 1 on leftovers")
    c.add_argument("file")
    c.add_argument("--grace", type=float, default=5.0, help="seconds to wait for things going away")
    a = ap.parse_args(argv)
    _scope[0] = None  # after a whole run: everyone's leftovers count
    if a.cmd == "snapshot":
        with open(a.file, "w") as f:
            f.write(snapshot().to_json())
        return 0
    with open(a.file) as f:
        before = Snapshot.from_json(f.read())
    found = leaks(before, a.grace)
    if found:
        print(report(found), file=sys.stderr)
        return 1
    print("leak check: nothing left behind")
    return 0


if __name__ == "__main__":
    sys.exit(main())
