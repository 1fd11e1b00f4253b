"""/etc/hosts and /etc/resolv.conf for bridge-mode sandboxes.

Name resolution between peers: each named network has one hosts file on
the host, bound read-only at /etc/hosts into every sandbox on it (no
resolver process: the SDK has no daemon, and a resolver would die with the
process that started it).  Sandboxes that join later must show up in the
files of those already running, so the file is updated in place (a bind
mount pins the inode: a rename would not be seen), and never truncated:
it is a table of fixed-width lines, one slot per address of the subnet
(slot = host index), written with one pwrite() of LINE bytes that never
crosses a page.  A reader (glibc re-reads /etc/hosts on every lookup) sees
each line whole, old or new, and every other line untouched.  Freed slots
become comment lines; the file grows to the highest address used, so up to
LINE bytes per address of the subnet (32 KiB for a /24): addresses are
handed out round-robin, past the slots just freed.

It shrinks only when no sandbox is on the network (lifecycle._compact_hosts,
under the state lock): back to the header alone.  Not while sandboxes run,
even by cutting a tail of comment lines: a reader that mapped the file
(mmap) would take a SIGBUS on the pages cut, and a reader mid-way through
the tail would see its last line cut short; with no sandbox, there is no
reader."""

from __future__ import annotations

import ipaddress
import os

LINE = 128  # divides the page size: a slot never straddles two pages
HEADER = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
HOSTNAME_MAX = 64  # spec.py's limit; IPv4 (15) + tab + 64 + newline < LINE


def _pad(text: str) -> bytes:
    data = text.encode()
    assert len(data) < LINE
    return data + b" " * (LINE - 1 - len(data)) + b"\n"


def slot_offset(subnet: ipaddress.IPv4Network, ip: str) -> int:
    index = int(ipaddress.IPv4Address(ip)) - int(subnet.network_address)
    return LINE * index  # index 0 is the network address: its slot holds the header


def create(path: str) -> None:
    """A network's file: the header in slot 0 (the header fits in one line)."""
    head = HEADER.encode()
    head += b"#" * (LINE - 1 - len(head)) + b"\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, head)
    finally:
        os.close(fd)


def set_slot(path: str, subnet: ipaddress.IPv4Network, ip: str, hostname: str | None) -> None:
    """Write one peer's line (hostname None: clear it), in place."""
    line = _pad(f"{ip}\t{hostname}") if hostname else _pad("#")
    off = slot_offset(subnet, ip)
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        if size < off:
            # no hole of NULs before the line: empty slots are comments
            os.pwrite(fd, _pad("#") * ((off - size) // LINE) + line, size)
        elif hostname or off < size:
            os.pwrite(fd, line, off)
    finally:
        os.close(fd)


def single(ip: str, hostname: str) -> str:
    """A sandbox's own file on the default network (like Docker's default
    bridge: the sandbox knows itself, not its peers)."""
    return f"{HEADER}{ip}\t{hostname}\n"


HOST_RESOLV = ("/etc/resolv.conf", "/run/systemd/resolve/resolv.conf")


def resolv_conf() -> str:
    """The host's resolver settings without loopback name servers (a
    sandbox's 127.0.0.1 is its own), as Docker does; with systemd-resolved's
    stub at 127.0.0.53, the upstream servers behind it."""
    for path in HOST_RESOLV:
        try:
            with open(path) as f:
                lines = f.read().splitlines()
        except OSError:
            continue
        kept, servers = [], 0
        for line in lines:
            parts = line.split()
            if parts[:1] == ["nameserver"]:
                try:
                    if len(parts) < 2 or ipaddress.ip_address(parts[1].split("%")[0]).is_loopback:
                        continue
                except ValueError:
                    continue
                servers += 1
            if parts[:1] in (["nameserver"], ["search"], ["domain"], ["options"]):
                kept.append(" ".join(parts))
        if servers:
            return "\n".join(kept) + "\n"
    return "# no name server of the host is reachable from a sandbox\n"
