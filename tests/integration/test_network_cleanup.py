"""Bridge networking leaves nothing behind: 200 sandboxes at once, and an
owner killed with SIGKILL in the middle of the setup (then `sandbox gc`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from sandbox import Network, Sandbox
from sandbox.network import lifecycle, links, state
from tests import leakcheck
from tests.conftest import require
from tests.integration.test_network import _free_port, _nft_ok

pytestmark = pytest.mark.integration


def _settled(want: dict[str, list[str]], deadline: float = 30.0) -> dict[str, list[str]]:
    """What of ours is on the host once it matches `want`, or after the
    deadline: a closed sandbox's veth goes with its namespace, which the
    kernel tears down in the background."""
    end = time.monotonic() + deadline
    while True:
        now = _ours()
        if now == want or time.monotonic() > end:
            return now
        time.sleep(0.05)


def _ours() -> dict[str, list[str]]:
    """Links, leases and nftables tables of ours on the host now."""
    snap = leakcheck.snapshot()
    return {
        "link": sorted(k for k in snap.keys["link"] if k.split(":")[1].strip().startswith("sbx")),
        "net": sorted(snap.keys["net"]),
        "nft": sorted(snap.keys["nft"]),
    }


@pytest.fixture
def quiet_host(sandbox_host: None) -> None:
    """Nothing of ours on the host before the test, so "nothing after" means
    the test's own objects went away (another worktree's suite may run
    sandboxes meanwhile, but on networks of its own names)."""
    require(_nft_ok(), "no nft/libnftables (apt-get install nftables)")
    subprocess.run([sys.executable, "-m", "sandbox.cli", "gc"], check=True, capture_output=True)


@pytest.mark.slow
def test_200_concurrent_bridge_sandboxes_leave_nothing(quiet_host: None, busybox_rootfs: Path) -> None:
    n = 200
    before = _ours()
    net = Network("t-scale")
    ports = [_free_port() for _ in range(5)]
    up = threading.Barrier(n, timeout=300)
    errors: list[BaseException] = []
    ips: set[str] = set()
    lock = threading.Lock()
    seen_links = []
    looked = threading.Event()

    def one(i: int) -> None:
        kw: dict[str, object] = {}
        if i < len(ports):
            kw["publish"] = {ports[i]: 80}
        elif i < 10:
            kw["egress"] = ["10.231.0.0/16"]
        try:
            with Sandbox(rootfs=busybox_rootfs, network=net, hostname=f"s{i}", **kw) as sb:  # type: ignore[arg-type]
                r = sb.exec(["ip", "-o", "-4", "addr", "show", "eth0"])
                assert r.exit_code == 0, r
                with lock:
                    ips.add(r.stdout.split()[3].decode())
                if up.wait() == 0:  # all 200 are up now: one thread looks
                    seen_links.append(_ours())
                    looked.set()
                assert looked.wait(300)
        except BaseException as e:
            errors.append(e)
            up.abort()
            looked.set()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(ips) == n  # one address each
    during = seen_links[0]
    assert len([x for x in during["link"] if "sbxv-" in x]) >= n
    assert len([x for x in during["net"] if x.startswith("t-scale/leases/")]) >= n
    assert "inet sandbox" in " ".join(during["nft"])
    after = _settled(before)
    assert after == before, after


_KILLED_OWNER = textwrap.dedent(r"""
    import os, signal, sys, time
    import sandbox._core, sandbox.network.links as links
    from sandbox import Network, Sandbox
    stage = sys.argv[2]

    def stop_here():
        print("ready", flush=True)
        time.sleep(600)

    if stage == "veth":  # the veth exists, the namespace is not configured yet
        real = links._socket_in
        def _socket_in(fd):
            stop_here()
        links._socket_in = _socket_in
    else:  # the network is ready, the init is not launched yet
        sandbox._core.launch = lambda *a, **k: stop_here()
    Sandbox(rootfs=sys.argv[1], network=Network("t-killed"), publish={int(sys.argv[3]): 80},
            egress=["10.231.0.0/16"]).start()
""")


def _kill_owner_mid_setup(busybox_rootfs: Path, stage: str) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_OWNER, str(busybox_rootfs), stage, str(_free_port())],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        line = child.stdout.readline() if child.stdout else b""
        assert line == b"ready\n", (line, child.stderr.read() if child.stderr and child.poll() else b"")
        mid = _ours()
        # the setup had made its objects: a lease, a bridge, our tables
        assert any(x.startswith("t-killed/leases/") for x in mid["net"]), mid
        assert any("sbx-t-killed" in x for x in mid["link"]), mid
        assert mid["nft"], mid
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.communicate()  # reaps it, closes the pipes
    assert state.read_record("t-killed") is not None  # nobody cleaned up: the owner died


@pytest.mark.parametrize("stage", ["veth", "launch"])
def test_owner_killed_during_setup_leaves_nothing_after_gc(
    quiet_host: None, busybox_rootfs: Path, stage: str
) -> None:
    before = _ours()
    _kill_owner_mid_setup(busybox_rootfs, stage)
    r = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "sandbox"), "gc"], capture_output=True, text=True
    )
    assert r.returncode == 0, r
    assert "removed lease t-killed/" in r.stdout and "removed network t-killed" in r.stdout, r.stdout
    assert _settled(before) == before


def test_the_next_start_on_the_network_reclaims_a_dead_owners_lease(
    quiet_host: None, busybox_rootfs: Path
) -> None:
    before = _ours()
    _kill_owner_mid_setup(busybox_rootfs, "launch")
    stale = state.lease_ips("t-killed")
    assert len(stale) == 1
    with Sandbox(rootfs=busybox_rootfs, network=Network("t-killed")) as sb:
        assert sb.exec(["true"]).exit_code == 0
        now = state.lease_ips("t-killed")
        assert len(now) == 1 and now.isdisjoint(stale)  # the dead owner's lease is gone, ours is there
    assert _settled(before) == before  # we were the last: the network went with us


_INTERRUPTED = textwrap.dedent(r"""
    import signal, sys, threading
    from sandbox import Network, Sandbox
    from sandbox.network import lifecycle, links, state

    real = lifecycle._attach
    main = threading.main_thread().ident

    def _attach(*args):
        att = real(*args)  # the lease, the hosts line, the veth: all made
        # Ctrl-C now, while the caller waits for this thread (spun for, not slept
        # for: the caller's frame is the Condition.wait inside Future.result)
        while True:
            f = sys._current_frames()[main]
            if f.f_code.co_name == "wait" and f.f_back and f.f_back.f_code.co_name == "result":
                break
        signal.pthread_kill(main, signal.SIGINT)
        return att

    lifecycle._attach = _attach
    try:
        Sandbox(rootfs=sys.argv[1], network=Network("t-intr", internal=True)).start()
    except KeyboardInterrupt:
        pass
    else:
        sys.exit("not interrupted")
    links.call(lambda: None)  # what was queued on the network thread ran
    print(sorted(state.lease_ips("t-intr")), state.read_record("t-intr") is not None)
""")


def test_an_interrupt_while_the_network_is_set_up_leaves_no_lease(
    quiet_host: None, busybox_rootfs: Path
) -> None:
    """Found in review: the caller's wait for the network thread was cut
    short, that thread finished the setup, and its Attachment went to
    nobody: the lease (of a live owner: no sweep takes it), its hosts line
    and the network stayed for the rest of the process."""
    before = _ours()
    r = subprocess.run(
        [sys.executable, "-c", _INTERRUPTED, str(busybox_rootfs)], capture_output=True, text=True, timeout=120
    )
    try:
        assert r.returncode == 0, r
        assert r.stdout == "[] False\n", r.stdout  # no lease left, the network went with it
    finally:
        subprocess.run([sys.executable, "-m", "sandbox.cli", "gc"], check=True, capture_output=True)
    assert _settled(before) == before


def test_a_network_whose_owner_died_before_its_files_were_made_is_usable(
    quiet_host: None, busybox_rootfs: Path
) -> None:
    """Found in review: a crash between the network's record and its hosts
    file left a network no later start could use (FileNotFoundError).  The
    state here is what such a crash left: a record, no files, no bridge."""
    before = _ours()
    name = "t-half"

    def half_made() -> None:
        with state.locked():
            subnet = lifecycle._pick_subnet()
            state.write_record(state.Record(name, subnet, Network(name).bridge, True, False))

    links.call(half_made)
    try:
        with Sandbox(rootfs=busybox_rootfs, network=Network(name, internal=True), hostname="h") as sb:
            r = sb.exec(["sh", "-c", "grep -cE '\th +$' /etc/hosts && cat /etc/resolv.conf"])
            assert r.exit_code == 0 and r.stdout.startswith(b"1\n"), r
    finally:
        subprocess.run([sys.executable, "-m", "sandbox.cli", "gc"], check=True, capture_output=True)
    assert _settled(before) == before  # we were the last: the network went with us
