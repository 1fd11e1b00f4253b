"""What the host's networks hold, on disk, so that any process (and `sandbox
gc` after a crash) sees the same: /var/lib/sandbox/run/net/, whatever
$SANDBOX_HOME says (see root())

    .lock                 flock'd around every change, by every process
    ip_forward.saved      the host's ip_forward before our first network
    NAME/network.json     subnet, bridge, internal, persistent
    NAME/hosts            the network's /etc/hosts (bound read-only into its sandboxes)
    NAME/resolv.conf      its /etc/resolv.conf
    NAME/leases/IP        one per sandbox: the owner (pid and start time), the
                          veth, the hostname, published ports and egress
    NAME/leases/IP.hosts  (the default network only) the sandbox's own /etc/hosts

A lease whose owner process is gone (a pid reused by another process has
another start time) is stale: whoever finds one reclaims it."""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

from .options import Port

LEASES = "leases"


# One place per host, not one per $SANDBOX_HOME: what this state describes
# is the host's, shared by every process on it (the sbx-NAME bridges, our
# two nftables tables, ip_forward).  Under $SANDBOX_HOME, two processes with
# two homes each rewrote our sets from their own leases alone (an egress
# list or an internal network of the other's lost its rules), removed the
# tables with their last network, joined the other's bridge of the same
# name, and `sandbox gc` deleted the other's links as stale.  (The default
# home's path, so that processes of older versions and of this one agree.)
ROOT = "/var/lib/sandbox/run/net"


def root() -> str:
    return ROOT


@contextlib.contextmanager
def locked() -> Iterator[None]:
    """The one lock of all network state.  Opened anew each time: flock
    excludes open files, so threads of one process exclude each other too."""
    os.makedirs(root(), mode=0o755, exist_ok=True)
    fd = os.open(os.path.join(root(), ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def write_atomic(path: str, data: str, mode: int = 0o644) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.write(fd, data.encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def start_time(pid: int) -> int | None:
    """Clock ticks after boot at which `pid` started: with the pid, it names
    one process (pids are reused)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        return int(data[data.rfind(b")") + 2 :].split()[19])
    except (OSError, ValueError, IndexError):
        return None


_me: tuple[int, int] | None = None


def me() -> tuple[int, int]:
    global _me
    pid = os.getpid()
    if _me is None or _me[0] != pid:  # recomputed in a forked child
        _me = (pid, start_time(pid) or 0)
    return _me


@dataclass(frozen=True)
class Record:
    """A network as it exists on this host (network.json)."""

    name: str
    subnet: str
    bridge: str
    internal: bool
    persistent: bool

    @property
    def net(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.subnet)

    @property
    def gateway(self) -> str:
        return str(self.net.network_address + 1)


@dataclass
class Lease:
    ip: str
    pid: int
    start: int
    veth: str
    hostname: str
    publish: list[tuple[str, int, int]] = field(default_factory=list)
    egress: list[str] | None = None

    def alive(self) -> bool:
        return start_time(self.pid) == self.start

    @property
    def ports(self) -> list[Port]:
        return [Port(p, h, s) for p, h, s in self.publish]


def net_dir(name: str) -> str:
    return os.path.join(root(), name)


def read_record(name: str) -> Record | None:
    try:
        with open(os.path.join(net_dir(name), "network.json")) as f:
            d = json.load(f)
        # canonical CIDR, as options.Network keeps it (a record written before
        # that may say "10.88.0.0/255.255.255.0")
        subnet = str(ipaddress.IPv4Network(d["subnet"]))
        return Record(d["name"], subnet, d["bridge"], bool(d["internal"]), bool(d["persistent"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def make_network_dir(name: str) -> None:
    os.makedirs(os.path.join(net_dir(name), LEASES), mode=0o755, exist_ok=True)


def write_record(rec: Record) -> None:
    make_network_dir(rec.name)
    write_atomic(os.path.join(net_dir(rec.name), "network.json"), json.dumps(asdict(rec)))


def records() -> list[Record]:
    try:
        names = sorted(os.listdir(root()))
    except OSError:
        return []
    return [r for n in names if not n.startswith(".") and (r := read_record(n)) is not None]


def network_names() -> list[str]:
    try:
        return sorted(n for n in os.listdir(root()) if os.path.isdir(net_dir(n)))
    except OSError:
        return []


def lease_ips(name: str) -> set[str]:
    """The addresses taken on a network (live or stale: only a sweep tells)."""
    try:
        names = os.listdir(os.path.join(net_dir(name), LEASES))
    except OSError:
        return set()
    return {n for n in names if n.count(".") == 3 and n.replace(".", "").isdigit()}


def lease_path(name: str, ip: str) -> str:
    return os.path.join(net_dir(name), LEASES, ip)


def read_lease(name: str, ip: str) -> Lease | None:
    try:
        with open(lease_path(name, ip)) as f:
            d = json.load(f)
        return Lease(
            ip,
            int(d["pid"]),
            int(d["start"]),
            str(d["veth"]),
            str(d["hostname"]),
            [(str(p), int(h), int(s)) for p, h, s in d.get("publish", [])],
            None if d.get("egress") is None else [str(c) for c in d["egress"]],
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def leases(name: str) -> list[Lease]:
    out = []
    for ip in sorted(lease_ips(name)):
        lease = read_lease(name, ip)
        if lease is None:
            # unreadable (a crash while it was written): a dead owner's
            lease = Lease(ip, 0, -1, "", "")
        out.append(lease)
    return out


def take_lease(name: str, lease: Lease) -> bool:
    """Write a new lease; False when the address is taken."""
    try:
        fd = os.open(lease_path(name, lease.ip), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        d = asdict(lease)
        del d["ip"]
        json.dump(d, f)
    return True


def drop_lease(name: str, ip: str) -> None:
    for path in (lease_path(name, ip), lease_path(name, ip) + ".hosts"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def remove_network_dir(name: str) -> None:
    d = net_dir(name)
    for sub in (os.path.join(d, LEASES), d):
        try:
            for n in os.listdir(sub):
                p = os.path.join(sub, n)
                if not os.path.isdir(p):
                    os.unlink(p)
            os.rmdir(sub)
        except FileNotFoundError:
            pass
