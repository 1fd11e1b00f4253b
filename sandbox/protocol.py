"""The control protocol between the host and the sandbox's init, sans I/O
(mirrors the message structs in _cext/proto.h).  Requests are encoded here;
replies are decoded here with bounds checks: they come from inside the
sandbox and are untrusted.  Both the sync and the async front ends use
these functions and do only the I/O themselves."""

from __future__ import annotations

import struct
from dataclasses import dataclass

REQ_EXEC = 1
REQ_KILL = 2
REQ_OPEN = 3
REQ_MKDIR = 4
REQ_CHOWN = 5
REQ_PTY = 6
REQ_SEAL_SECRETS = 7
REP_READY = 100
REP_SETUP_FAIL = 101
REP_STARTED = 102
REP_EXEC_FAIL = 103
REP_EXITED = 104
REP_FD = 105
REP_ERROR = 106
REP_OK = 107

EXEC_NO_STARTED = 1  # exec request flag: no STARTED record (exec() needs none)
EXEC_TTY = 2  # exec request flag: fd 0 is a terminal, to become the controlling one
EXEC_KEEP = 4  # exec request flag: the init keeps its reply socket as a channel (proto.h)
EXEC_REUSE = 8  # exec request flag: no reply socket, the channel is it
EXEC_WAITS = 16  # exec request flag: the sender sleeps for the reply at once (proto.h)
MAX_CHANNELS = 8  # reply channels per sandbox

DETAIL_MAX = 240
MSG_MAX = 256 * 1024

HDR = struct.Struct("=II")
EXEC_REQ = struct.Struct("=8IQ")
RLIMIT = struct.Struct("=IIQQ")
KILL_REQ = struct.Struct("=II")
PATH_REQ = struct.Struct("=II")
FAIL = struct.Struct(f"=Ii{DETAIL_MAX}s")
STARTED = struct.Struct("=II")
EXITED = struct.Struct("=iiqqq")

# Exec stages (enum sbx_exec_stage), as words for messages.
EXEC_STAGES = {
    1: "fork",
    2: "setsid",
    3: "stdio",
    4: "setrlimit",
    5: "setgroups",
    6: "setgid",
    7: "setuid",
    8: "chdir",
    9: "exec",
    10: "request",
    11: "capabilities",
    12: "no_new_privs",
    13: "seccomp",
    14: "cgroup",
    15: "stopped",
}


class Malformed(Exception):
    """A reply that does not parse (turned into ProtocolError by callers)."""


@dataclass(frozen=True)
class Fail:
    stage: int
    errno: int
    detail: str


@dataclass(frozen=True)
class Exited:
    status: int
    utime: float
    stime: float
    maxrss: int  # bytes
    syscall: int = -1  # stopped by a seccomp kill action: its number; -2 another arch's


@dataclass(frozen=True)
class Reply:
    type: int
    id: int
    body: bytes


@dataclass(frozen=True)
class ExecFixed:
    """The part of an exec request that depends on the user, the limits and
    the environment only: encoded once for the execs that repeat them."""

    uid: int
    gid: int
    ngroups: int
    nrlimits: int
    tables: bytes  # the groups, then the rlimits
    env: bytes  # "K=V\0" each
    envc: int


def exec_fixed(
    uid: int, gid: int, groups: list[int], rlimits: list[tuple[int, int, int]], env: list[str]
) -> ExecFixed:
    tables = b"".join(struct.pack("=I", g) for g in groups)
    tables += b"".join(RLIMIT.pack(r, 0, cur, mx) for r, cur, mx in rlimits)
    strings = b"".join(s.encode("utf-8", "surrogateescape") + b"\0" for s in env)
    if strings.count(b"\0") != len(env):  # the init splits them at NULs: one inside would make two
        raise ValueError("an environment string holds a NUL")
    return ExecFixed(uid, gid, len(groups), len(rlimits), tables, strings, len(env))


def encode_exec_fixed(
    req_id: int, fixed: ExecFixed, argv: list[str], cwd: str, fds_mask: int, flags: int = 0, caps: int = 0
) -> bytes:
    f = fixed
    msg = b"".join(
        (
            HDR.pack(REQ_EXEC, req_id),
            EXEC_REQ.pack(f.uid, f.gid, f.ngroups, f.nrlimits, len(argv), f.envc, fds_mask, flags, caps),
            f.tables,
            *(s.encode("utf-8", "surrogateescape") + b"\0" for s in (cwd, *argv)),
            f.env,
        )
    )
    if len(msg) > MSG_MAX:
        raise ValueError(f"the command and its environment take {len(msg)} bytes, more than {MSG_MAX}")
    return msg


def encode_exec(
    req_id: int,
    argv: list[str],
    env: list[str],
    cwd: str,
    uid: int,
    gid: int,
    groups: list[int],
    rlimits: list[tuple[int, int, int]],
    fds_mask: int,
    flags: int = 0,
    caps: int = 0,
) -> bytes:
    fixed = exec_fixed(uid, gid, groups, rlimits, env)
    return encode_exec_fixed(req_id, fixed, argv, cwd, fds_mask, flags, caps)


def encode_kill(req_id: int, target: int, sig: int) -> bytes:
    return HDR.pack(REQ_KILL, req_id) + KILL_REQ.pack(target, sig)


def encode_pty(req_id: int) -> bytes:
    return HDR.pack(REQ_PTY, req_id)


def encode_seal_secrets(req_id: int) -> bytes:
    return HDR.pack(REQ_SEAL_SECRETS, req_id)


def encode_path(kind: int, req_id: int, path: str, flags: int, mode: int) -> bytes:
    return (
        HDR.pack(kind, req_id) + PATH_REQ.pack(flags, mode) + path.encode("utf-8", "surrogateescape") + b"\0"
    )


def decode(data: bytes) -> Reply:
    if len(data) < HDR.size:
        raise Malformed(f"a message of {len(data)} bytes")
    t, i = HDR.unpack_from(data)
    return Reply(t, i, data[HDR.size :])


def decode_fail(body: bytes) -> Fail:
    if len(body) != FAIL.size:
        raise Malformed(f"a failure record of {len(body)} bytes, expected {FAIL.size}")
    stage, err, detail = FAIL.unpack(body)
    text = detail.split(b"\0", 1)[0].decode("utf-8", "replace")
    return Fail(stage, err, text)


def decode_started(body: bytes) -> int:
    if len(body) != STARTED.size:
        raise Malformed(f"a start record of {len(body)} bytes")
    return int(STARTED.unpack(body)[0])


def decode_exited(body: bytes) -> Exited:
    if len(body) != EXITED.size:
        raise Malformed(f"an exit record of {len(body)} bytes")
    status, nr, ut, st, rss = EXITED.unpack(body)
    if ut < 0 or st < 0 or rss < 0 or nr < -2:
        raise Malformed("negative accounting in an exit record")
    return Exited(status, ut / 1e6, st / 1e6, rss * 1024, nr)
