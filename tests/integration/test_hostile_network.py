"""A hostile command against the network namespace pool and against secret
redaction: what one sandbox leaves for the next, and what of a secret
reaches the captured output.  No packet leaves the sandbox's own
namespace here (loopback only)."""

from __future__ import annotations

import os
import secrets as pysecrets
import time
from pathlib import Path

import pytest

import sandbox
from sandbox import Limits, Sandbox, netpool
from tests.conftest import require, sh

pytestmark = pytest.mark.integration

SECRETS_DIR = "/run/secrets"

# perl: an IPv6 flow label (IPV6_FLOWLABEL_MGR, struct in6_flowlabel_req)
# for ::1, shared with anyone (IPV6_FL_S_ANY), lingering 150 s after its
# socket is closed (the most an unprivileged process may ask).  No socket
# is left once perl exits: the label lives on in the namespace alone.
LABEL = 0x12345
FLOW_LABEL = rf"""
use Socket qw(PF_INET6 AF_INET6 SOCK_DGRAM inet_pton);
socket(my $s, PF_INET6, SOCK_DGRAM, 0) or die "socket: $!";
my $req = pack("a16 N C C S S S L", inet_pton(AF_INET6, "::1"), {LABEL}, 0, 255, 1, 150, 150, 0);
setsockopt($s, 41, 32, $req) or die "IPV6_FLOWLABEL_MGR: $!";
"""


def unique_secret() -> bytes:
    return b"sbx-secret-" + pysecrets.token_hex(16).encode()


def _pool_inodes(fds: list[int]) -> set[int]:
    out = set()
    for fd in fds:
        try:
            out.add(os.fstat(fd).st_ino)
        except OSError:  # closed meanwhile by the pool's thread
            pass
    return out


def test_a_flow_label_left_behind_keeps_the_netns_from_the_next_sandbox(
    sandbox_host: None, debian_rootfs: Path
) -> None:
    """The pool's idle check (sandbox/netpool.py, sbx_netns_idle) counts
    sockets, TIME_WAITs and fragments; an IPv6 flow label outlives its
    socket by up to 150 s and is none of them.  What an attacker gets: the
    next sandbox (another tenant, e.g. the next submission of a judge)
    inherits a namespace the last one changed: it reads the label, its
    destination and lifetime in /proc/net/ip6_flowlabel and may use it (a
    channel between tenants that outlasts the sandbox), and it cannot make
    that label itself (EEXIST)."""
    require(netpool.pool.reuse, "SANDBOX_NETNS_REUSE=0")
    with Sandbox(rootfs=debian_rootfs, warm=False) as sb:
        assert sb.pid is not None
        # held: the namespace cannot be destroyed meanwhile, so its inode
        # number means this namespace and no later one
        held = os.open(f"/proc/{sb.pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        r = sb.exec(["perl", "-e", FLOW_LABEL], timeout=30)
        assert r.ok, r.stderr
        assert f"{LABEL:05x}" in sb.files.read_text("/proc/net/ip6_flowlabel")
        # its socket is gone (sockstat's "sockets: used" counts the pool's
        # own netlink socket too, in a namespace made for reuse)
        six = sb.files.read_text("/proc/net/sockstat6").splitlines()
        assert six and all(" inuse 0" in line for line in six), six
    try:
        ino = os.fstat(held).st_ino
        assert sandbox.wait_closed(10)
        # the pool's thread checks the namespace handed back: it goes to the
        # ready ones, or is closed (its sockstat files go from _stats)
        deadline = time.monotonic() + 10
        while True:
            ready = _pool_inodes(list(netpool.pool._ready))
            pending = _pool_inodes(list(netpool.pool._stats))
            if ino in ready or ino not in pending or time.monotonic() > deadline:
                break
            time.sleep(0.005)
        assert ino not in ready, "a namespace with the last sandbox's flow label is ready for the next one"
        assert ino not in pending
    finally:
        os.close(held)


def test_a_secret_file_with_a_final_newline_is_redacted_without_it(
    sandbox_host: None, busybox_rootfs: Path
) -> None:
    """Secrets come from files (Path, `--secret NAME=@FILE`), which end with
    a newline; the redaction looks for the whole content, newline included.
    What an attacker (or a careless log line) gets: the value in clear in
    the captured output of any command that prints it without the newline,
    as `$(cat ...)`, `.strip()` or `read` do."""
    value = unique_secret()
    with Sandbox(rootfs=busybox_rootfs, secrets={"token": value + b"\n"}, redact_secrets=True) as sb:
        r = sh(sb, f'printf "token=%s;" "$(cat {SECRETS_DIR}/token)"')
        assert r.exit_code == 0, r.stderr
        assert value not in r.stdout, r.stdout


def test_a_multi_line_secret_is_redacted_through_a_tty(sandbox_host: None, busybox_rootfs: Path) -> None:
    """A pty turns each "\\n" into "\\r\\n" (onlcr), so a multi-line secret (a
    PEM key) no longer matches.  What an attacker gets: the whole key in
    clear in the output of spawn(tty=True) with redact_secrets=True."""
    body = unique_secret()
    key = b"-----BEGIN KEY-----\n" + body + b"\n" + unique_secret() + b"\n-----END KEY-----\n"
    with Sandbox(rootfs=busybox_rootfs, secrets={"key": key}, redact_secrets=True) as sb:
        p = sb.spawn(["cat", f"{SECRETS_DIR}/key"], tty=True)
        r = p.communicate(timeout=30)
        assert r.exit_code == 0, r
        assert body not in r.stdout, r.stdout


def test_an_output_cap_does_not_leave_a_secret_half_redacted(
    sandbox_host: None, busybox_rootfs: Path
) -> None:
    """The cap cuts the kept output first, and the redaction then looks
    for whole secrets only.  What an attacker gets: a command that pads its
    output so that the cap falls inside the secret keeps all but its last
    byte in the captured output (and in ExecFailed's message)."""
    value = unique_secret()
    pad = 1000
    with Sandbox(rootfs=busybox_rootfs, secrets={"token": value}, redact_secrets=True) as sb:
        r = sb.exec(
            ["sh", "-c", f"head -c {pad} /dev/zero; cat {SECRETS_DIR}/token"],
            limits=Limits(output=pad + len(value) - 1),
            timeout=30,
        )
        assert r.truncated and r.reason == "output_limit", r
        assert value[: len(value) // 2] not in r.stdout, r.stdout[pad:]
