"""exec()'s host side in C (sandbox/execio.py): signals during the wait,
an interrupted exec, stdin nobody reads, and no fd left behind whichever
way an exec ends."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

import sandbox
from sandbox import CommandNotFound, Limits, Sandbox, warm
from tests.conftest import sh, sh_ok

pytestmark = pytest.mark.integration


def _fds() -> set[str]:
    """Our pipes and sockets (the cgroup pool keeps cgroupfs files open
    ahead of time, as many as its thread has made by then)."""
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # the listing's own fd
        if target.startswith(("pipe:", "socket:")):
            out.add(f"{fd} {target}")
    return out


def test_a_signal_handler_runs_during_an_exec_and_the_exec_goes_on(sb) -> None:
    seen: list[int] = []
    old = signal.signal(signal.SIGALRM, lambda n, f: seen.append(n))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.02, 0.02)  # several interruptions of the wait
        r = sh(sb, "sleep 0.3; echo done")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert seen  # the wait was interrupted, and went on
    assert (r.reason, r.exit_code, r.stdout) == ("exited", 0, b"done\n")


class Interrupted(Exception):
    pass


def test_an_interrupted_exec_kills_its_command(sb) -> None:
    def interrupt(n: int, f: object) -> None:
        raise Interrupted

    def when_running() -> None:
        # the command runs once its pid is written: interrupt the exec then
        while not (sb.files.read_bytes("/tmp/pid", missing_ok=True) or b"").strip():
            time.sleep(0.01)
        signal.pthread_kill(main, signal.SIGALRM)

    main = threading.main_thread().ident
    assert main == threading.get_ident()
    old = signal.signal(signal.SIGALRM, interrupt)
    t = threading.Thread(target=when_running)
    try:
        t.start()
        with pytest.raises(Interrupted):
            sh(sb, "echo $$ > /tmp/pid; exec sleep 30")
    finally:
        t.join(10)
        signal.signal(signal.SIGALRM, old)
    assert sb.files.read_bytes("/tmp/pid").strip()  # it ran
    # the command is gone (kill -0 fails), and the sandbox still serves execs
    assert sh(sb, "kill -0 $(cat /tmp/pid)").exit_code != 0


def test_stdin_the_command_does_not_read(sb) -> None:
    # 4 MiB is more than a pipe holds: the write meets EPIPE once `true` exits
    r = sb.exec(["true"], stdin=b"x" * (4 << 20))
    assert (r.reason, r.exit_code) == ("exited", 0)


def test_stdin_given_to_a_command_that_reads_part_of_it(sb) -> None:
    r = sb.exec(["head", "-c", "10"], stdin=b"y" * (1 << 20))
    assert r.stdout == b"y" * 10


def test_no_fd_is_left_whichever_way_an_exec_ends(sandbox_host, busybox_rootfs) -> None:
    # no warm pool at work meanwhile: its sandboxes' control sockets come and go
    warm.shutdown()
    outside = _fds()
    with Sandbox(rootfs=busybox_rootfs, warm=False) as sb:
        _no_fd_left(sb)
    assert sandbox.wait_closed()
    assert _fds() == outside  # its control socket and reply channels too


def _channels(sb) -> set[str]:
    """The sandbox's free reply channels (our ends): an exec that ends
    otherwise than by its exit record drops its channel, the next makes
    another (sandbox/execio.py)."""
    return {f"{fd} {os.readlink(f'/proc/self/fd/{fd}')}" for _, fd in sb._launched.channels}


def _no_fd_left(sb) -> None:
    sh_ok(sb, "true")  # anything opened once (the user database...) is open now
    before = _fds() - _channels(sb)
    for _ in range(5):
        sh_ok(sb, "echo out; echo err >&2")
        assert sh(sb, "sleep 5", timeout=0.05).reason == "timeout"
        with pytest.raises(CommandNotFound):
            sb.exec(["/no/such/binary"])
        r = sh(sb, "yes | head -c 3000000", limits=Limits(output="1M"))
        assert (r.reason, len(r.stdout)) == ("output_limit", 1 << 20)
        r = sh(sb, "yes | head -c 3000000", limits=Limits(output="1M", output_action="close"))
        assert (r.reason, len(r.stdout)) == ("output_limit", 1 << 20)
        sb.exec(["cat"], stdin=b"z" * 100000)
    assert len(sb._launched.channels) == 1  # one exec at a time: one channel
    assert _fds() - _channels(sb) == before


def test_sequential_execs_share_one_reply_channel(sb) -> None:
    # the init keeps the reply socket after an exec (protocol.EXEC_KEEP): the
    # next exec sends none, and its replies come on the same one
    sh_ok(sb, "true")
    ((chan, fd),) = sb._launched.channels
    inode = os.readlink(f"/proc/self/fd/{fd}")
    for i in range(20):
        assert sh(sb, f"echo {i}; exit {i % 3}").stdout == f"{i}\n".encode()
    assert [(c, os.readlink(f"/proc/self/fd/{f}")) for c, f in sb._launched.channels] == [(chan, inode)]


def test_concurrent_execs_past_the_channels(sb) -> None:
    # more execs at once than channels: the rest get sockets of their own
    from sandbox import protocol

    n = protocol.MAX_CHANNELS + 4
    results: list[bytes] = []
    go = threading.Barrier(n)

    # each command ends only once all have started: n execs are in flight at once
    wait_all = f'touch /tmp/in.{{i}}; until [ "$(ls /tmp/in.* | wc -l)" -ge {n} ]; do sleep 0.01; done'

    def one(i: int) -> None:
        go.wait()
        results.append(sh(sb, wait_all.format(i=i) + f"; echo {i}", timeout=60).stdout)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == sorted(f"{i}\n".encode() for i in range(n))
    assert len(sb._launched.channels) == protocol.MAX_CHANNELS
    assert sh(sb, "echo again").stdout == b"again\n"


def test_an_exec_after_an_abandoned_one_on_its_channel(sb) -> None:
    # an exec given up on drops its channel while its command may still run:
    # the next exec makes the channel anew, and the old command's exit
    # record goes nowhere (the init gives the old socket to the old exec)
    def interrupt() -> None:
        raise KeyboardInterrupt

    sh_ok(sb, "true")
    timer = threading.Timer(0.2, lambda: signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR1))
    old = signal.signal(signal.SIGUSR1, lambda *_: interrupt())
    try:
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            sh(sb, "exec sleep 30")
    finally:
        timer.cancel()
        signal.signal(signal.SIGUSR1, old)
    for i in range(5):
        assert sh(sb, f"echo {i}").stdout == f"{i}\n".encode()
    assert len(sb._launched.channels) == 1
