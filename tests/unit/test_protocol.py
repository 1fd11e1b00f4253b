"""The control protocol, sans I/O: replies come from inside the sandbox and
are untrusted, so every decoder checks sizes and values and raises
Malformed (turned into ProtocolError) on anything else."""

from __future__ import annotations

import array
import errno
import os
import socket
import struct

import pytest

from sandbox import (
    CommandNotFound,
    ExecError,
    LaunchError,
    ProtocolError,
    SandboxClosed,
    _base,
    collector,
    protocol,
)
from sandbox.protocol import EXITED, FAIL, HDR, STARTED, Malformed


def fail_body(stage: int, err: int, detail: bytes) -> bytes:
    return FAIL.pack(stage, err, detail)


# -- decode ----------------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"\x01", b"\x01\x00\x00\x00\x02\x00\x00"])
def test_decode_rejects_short_messages(data: bytes) -> None:
    with pytest.raises(Malformed):
        protocol.decode(data)


def test_decode_splits_header_and_body() -> None:
    r = protocol.decode(HDR.pack(protocol.REP_STARTED, 9) + b"body")
    assert (r.type, r.id, r.body) == (protocol.REP_STARTED, 9, b"body")


@pytest.mark.parametrize("size", [0, 1, FAIL.size - 1, FAIL.size + 1, 4096])
def test_decode_fail_rejects_wrong_sizes(size: int) -> None:
    with pytest.raises(Malformed):
        protocol.decode_fail(b"\0" * size)


def test_decode_fail_detail_is_bounded_and_decoded_safely() -> None:
    f = protocol.decode_fail(fail_body(9, errno.ENOENT, b"/bin/nosuch\0garbage after the NUL"))
    assert (f.stage, f.errno, f.detail) == (9, errno.ENOENT, "/bin/nosuch")
    # No NUL at all: the whole (bounded) field, nothing beyond it.
    f = protocol.decode_fail(fail_body(1, 1, b"A" * protocol.DETAIL_MAX))
    assert f.detail == "A" * protocol.DETAIL_MAX
    # Not UTF-8: replaced, never an exception.
    f = protocol.decode_fail(fail_body(1, 1, b"\xff\xfe\xc3(\0"))
    assert isinstance(f.detail, str) and "\ufffd" in f.detail


@pytest.mark.parametrize("size", [0, STARTED.size - 1, STARTED.size + 1])
def test_decode_started_rejects_wrong_sizes(size: int) -> None:
    with pytest.raises(Malformed):
        protocol.decode_started(b"\0" * size)


def test_decode_started() -> None:
    assert protocol.decode_started(STARTED.pack(42, 0)) == 42


@pytest.mark.parametrize("size", [0, EXITED.size - 1, EXITED.size + 1, 2 * EXITED.size])
def test_decode_exited_rejects_wrong_sizes(size: int) -> None:
    with pytest.raises(Malformed):
        protocol.decode_exited(b"\0" * size)


@pytest.mark.parametrize(("ut", "st", "rss"), [(-1, 0, 0), (0, -1, 0), (0, 0, -1), (-(2**63), 0, 0)])
def test_decode_exited_rejects_negative_accounting(ut: int, st: int, rss: int) -> None:
    with pytest.raises(Malformed):
        protocol.decode_exited(EXITED.pack(0, -1, ut, st, rss))


def test_decode_exited_units() -> None:
    e = protocol.decode_exited(EXITED.pack(3 << 8, -1, 1_500_000, 250_000, 2048))
    assert (e.status, e.utime, e.stime, e.maxrss) == (3 << 8, 1.5, 0.25, 2048 * 1024)


# -- encoders ------------------------------------------------------------------------------


def test_encode_exec_refuses_oversized_requests() -> None:
    with pytest.raises(ValueError):
        protocol.encode_exec(1, ["x" * protocol.MSG_MAX], [], "/", 0, 0, [], [], 0)


def test_encode_exec_fits_exactly() -> None:
    base = len(protocol.encode_exec(1, [""], [], "/", 0, 0, [], [], 0))
    msg = protocol.encode_exec(1, ["x" * (protocol.MSG_MAX - base)], [], "/", 0, 0, [], [], 0)
    assert len(msg) == protocol.MSG_MAX


def test_encode_path_and_kill() -> None:
    m = protocol.encode_path(protocol.REQ_OPEN, 3, "/etc/passwd", os.O_RDONLY, 0o644)
    assert m == HDR.pack(protocol.REQ_OPEN, 3) + struct.pack("=II", os.O_RDONLY, 0o644) + b"/etc/passwd\0"
    assert protocol.encode_kill(4, 2, 9) == HDR.pack(protocol.REQ_KILL, 4) + struct.pack("=II", 2, 9)


# -- replies over a socket (recv_reply) ---------------------------------------------------------


@pytest.fixture
def pair():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    yield a, b
    a.close()
    b.close()


def _open_fds() -> set[int]:
    return {int(n) for n in os.listdir("/proc/self/fd")}


def test_recv_reply_oversized(pair) -> None:
    a, b = pair
    b.send(HDR.pack(protocol.REP_OK, 1) + b"x" * (_base.REPLY_SIZE + 10))
    with pytest.raises(ProtocolError, match="oversized"):
        _base.recv_reply(a)


def test_recv_reply_short(pair) -> None:
    a, b = pair
    b.send(b"abc")
    with pytest.raises(ProtocolError):
        _base.recv_reply(a)


def test_recv_reply_eof_is_closed(pair) -> None:
    a, b = pair
    b.close()
    with pytest.raises(SandboxClosed):
        _base.recv_reply(a)


def test_recv_reply_closes_extra_fds(pair) -> None:
    """A hostile init passing many fds must not make the host keep them."""
    a, b = pair
    sent = [os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC) for _ in range(4)]
    b.sendmsg(
        [HDR.pack(protocol.REP_FD, 1)], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", sent))]
    )
    for fd in sent:
        os.close(fd)
    before = _open_fds()
    reply, fd = _base.recv_reply(a)
    assert reply.type == protocol.REP_FD
    assert fd is not None
    os.close(fd)
    assert _open_fds() <= before


def test_recv_reply_malformed_closes_fd(pair) -> None:
    a, b = pair
    sent = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    b.sendmsg([b"ab"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [sent]))])
    os.close(sent)
    before = _open_fds()
    with pytest.raises(ProtocolError):
        _base.recv_reply(a)
    assert _open_fds() <= before


# -- failure records become specific exceptions ---------------------------------------------------


def test_exec_failure_enoent_is_command_not_found() -> None:
    f = protocol.Fail(9, errno.ENOENT, "/bin/nosuch")
    e = collector.exec_error(f, "/bin/nosuch")
    assert isinstance(e, CommandNotFound)
    assert str(e).startswith("exec /bin/nosuch: No such file or directory (ENOENT)")
    assert (e.errno, e.stage) == (errno.ENOENT, "exec")


def test_exec_failure_eacces_is_exec_error() -> None:
    e = collector.exec_error(protocol.Fail(9, errno.EACCES, "/x"), "/x")
    assert type(e) is ExecError
    assert str(e).startswith("exec /x: Permission denied (EACCES)")


def test_exec_failure_chdir_names_the_directory() -> None:
    e = collector.exec_error(protocol.Fail(8, errno.ENOENT, "/nope"), "ls")
    assert type(e) is ExecError and e.stage == "chdir"
    assert "'/nope'" in str(e) and "ENOENT" in str(e)


def test_exec_failure_unknown_stage() -> None:
    e = collector.exec_error(protocol.Fail(999, 1, ""), "ls")
    assert "stage 999" in str(e)


def test_exec_failure_with_an_unknown_errno() -> None:
    e = collector.exec_error(protocol.Fail(9, 99999, ""), "ls")
    assert "errno 99999" in str(e)


def test_setup_error_kinds() -> None:
    bad_type = _base.setup_error(protocol.Reply(protocol.REP_OK, 0, b""))
    assert isinstance(bad_type, ProtocolError)
    bad_body = _base.setup_error(protocol.Reply(protocol.REP_SETUP_FAIL, 0, b"short"))
    assert isinstance(bad_body, ProtocolError)
    e = _base.setup_error(
        protocol.Reply(protocol.REP_SETUP_FAIL, 0, fail_body(12, errno.ENOTDIR, b"mkdir /etc/passwd/x\0"))
    )
    assert isinstance(e, LaunchError)
    assert e.errno == errno.ENOTDIR
    assert "/etc/passwd/x" in str(e)


def test_collector_rejects_unexpected_replies() -> None:
    c = _base.Collector(["ls"])
    with pytest.raises(ProtocolError):
        c.on_reply(protocol.Reply(protocol.REP_FD, 1, b""))
    with pytest.raises(ProtocolError):
        c.on_reply(protocol.Reply(protocol.REP_EXITED, 1, b"\0" * 3))


@pytest.mark.parametrize(
    ("status", "code", "sig", "reason"),
    [
        (0, 0, None, "exited"),
        (3 << 8, 3, None, "exited"),
        (9, None, 9, "signaled"),
        (15, None, 15, "signaled"),
    ],
)
def test_collector_result(status: int, code: int | None, sig: int | None, reason: str) -> None:
    c = _base.Collector(["x"])
    c.feed(1, b"out")
    c.feed(2, b"err")
    c.on_reply(protocol.Reply(protocol.REP_EXITED, 1, EXITED.pack(status, -1, 10, 20, 30)))
    r = c.result()
    assert (r.exit_code, r.signal, r.reason) == (code, sig, reason)
    assert (r.stdout, r.stderr) == (b"out", b"err")
    assert r.returncode == (code if code is not None else -sig)
    assert r.cpu_time == pytest.approx(30e-6)
    assert r.max_rss == 30 * 1024


def test_an_environment_string_with_a_nul_is_refused() -> None:
    """The init splits the environment at NULs: one inside a string would
    make two (whatever let it through, e.g. a field of the sandbox's own
    /etc/passwd)."""
    with pytest.raises(ValueError, match="NUL"):
        protocol.exec_fixed(0, 0, [0], [], ["HOME=/home/x\0LD_PRELOAD=/x.so", "LAST=1"])
    assert protocol.exec_fixed(0, 0, [0], [], ["A=1", "B="]).envc == 2
