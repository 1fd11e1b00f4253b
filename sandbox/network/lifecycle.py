"""A bridge-mode sandbox's network: attach before the launch, detach after
the init is gone, and the reclaiming of what dead owners left (`gc`).

Order, for crash safety: every kernel object is named in the state
directory before it is made (the network record before its bridge, the
lease before its veth), under the state lock; so whatever a SIGKILL
interrupts, `gc` (or the next process that uses the network) finds a stale
record naming it.  A sandbox's veth dies with its network namespace too,
when the owner dies."""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import secrets
import socket
from dataclasses import dataclass, field

from ..errors import ConfigError, HostError
from ..spec import Mount, Spec
from . import hosts, links, nft, state
from .options import AUTO_PREFIX, AUTO_RANGE, FORWARD_SAVED, NetOptions, Network, Port

_swept: set[str] = set()  # networks whose stale leases this process reclaimed
_mtu: int | None = None


@dataclass
class Attachment:
    network: str
    ip: str
    veth: str
    mounts: tuple[Mount, ...]
    has_rules: bool
    reserved: list[socket.socket] = field(default_factory=list, repr=False)


def _mac(ip: str) -> str:
    """The sandbox's MAC, from its address (as Docker does): an address that
    passes to a new sandbox keeps its MAC, so neighbour caches stay right."""
    b = ipaddress.IPv4Address(ip).packed
    return "02:42:" + ":".join(f"{x:02x}" for x in b)


def _reserve(ports: tuple[Port, ...]) -> list[socket.socket]:
    """Hold each published host port with a bound socket while the sandbox
    lives: a busy port is an error now, not a silent shadowing, and no host
    service can take it meanwhile.  (The traffic itself is DNAT'd before any
    socket sees it.)"""
    out: list[socket.socket] = []
    try:
        for p in ports:
            kind = socket.SOCK_STREAM if p.proto == "tcp" else socket.SOCK_DGRAM
            s = socket.socket(socket.AF_INET, kind | socket.SOCK_CLOEXEC)
            out.append(s)
            try:
                s.bind(("0.0.0.0", p.host))
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    raise ConfigError(
                        f"publish[{p.host}]",
                        f"host port {p.host}/{p.proto} is in use (by a host service or another "
                        "sandbox): pick another host port",
                    ) from None
                raise
    except BaseException:
        for s in out:
            s.close()
        raise
    return out


def _resolv_mountable(spec: Spec) -> bool:
    """/etc/resolv.conf can take a bind mount unless the image makes it (or
    /etc) a symlink, which the init refuses, or lacks it in a read-only root."""
    for layer in reversed(spec.layers):
        etc = os.path.join(layer, "etc")
        path = os.path.join(etc, "resolv.conf")
        if os.path.islink(etc) or os.path.islink(path):
            return False
        if os.path.lexists(path):
            return True
    return not spec.read_only


def attach(opts: NetOptions, spec: Spec, netns_fd: int) -> Attachment:
    reserved = _reserve(opts.publish)
    try:
        att = links.call(_attach, opts, spec, netns_fd, undo=_detach)
    except BaseException:
        for s in reserved:
            s.close()
        raise
    att.reserved = reserved
    return att


def detach(att: Attachment) -> None:
    try:
        links.call(_detach, att)
    finally:
        for s in att.reserved:
            s.close()


# -- on the network thread -------------------------------------------------------


def _uplink_mtu() -> int:
    global _mtu
    if _mtu is None:
        _mtu = links.uplink_mtu()
    return _mtu


def _attach(opts: NetOptions, spec: Spec, netns_fd: int) -> Attachment:
    net = opts.network
    veth = links.VETH_PREFIX + secrets.token_hex(4)
    with state.locked():
        rec = _ensure_network(net)
        if net.name not in _swept:
            _sweep(rec)
            _swept.add(net.name)
        ip = _allocate(rec, veth, spec.hostname, opts)
        has_rules = bool(opts.publish) or opts.egress is not None
        try:
            if opts.egress is not None:
                # an allow-list that silently did not hold towards the peers
                # on its bridge would be worse than a refusal
                links.check_bridge_filtering(rec.bridge)
            d = state.net_dir(rec.name)
            if net.resolves_peers:
                hosts.set_slot(os.path.join(d, "hosts"), rec.net, ip, spec.hostname)
                hosts_path = os.path.join(d, "hosts")
            else:
                hosts_path = state.lease_path(rec.name, ip) + ".hosts"
                state.write_atomic(hosts_path, hosts.single(ip, spec.hostname))
            if has_rules:
                lease = state.read_lease(rec.name, ip)
                try:
                    if lease is None:
                        raise HostError(f"the lease {rec.name}/{ip} is unreadable")
                    nft.add(lease)
                except HostError:
                    _sync_rules()  # e.g. a key still held by a dead owner's element
        except BaseException:
            _release(rec, ip, veth, has_rules)
            raise
    try:
        links.add_veth(
            veth, netns_fd, rec.bridge, _uplink_mtu(), ip, rec.net.prefixlen, rec.gateway, _mac(ip)
        )
    except BaseException:
        with state.locked():
            _release(rec, ip, veth, has_rules)
        raise
    mounts = [Mount(hosts_path, "/etc/hosts")]
    if _resolv_mountable(spec):
        mounts.append(Mount(os.path.join(state.net_dir(rec.name), "resolv.conf"), "/etc/resolv.conf"))
    return Attachment(rec.name, ip, veth, tuple(mounts), has_rules)


def _detach(att: Attachment) -> None:
    with state.locked():
        rec = state.read_record(att.network)
        if rec is None:  # removed by a gc that thought us dead: the veth goes with the namespace
            return
        _release(rec, att.ip, att.veth, att.has_rules, veth_dies=True)


def _release(rec: state.Record, ip: str, veth: str, has_rules: bool, veth_dies: bool = False) -> None:
    """Under the lock: the veth, the lease, its hosts line and rules; the
    network too when it was the last sandbox (unless persistent).

    `veth_dies`: the sandbox's namespace is on its way out (its init is
    dead, our fd closed): the kernel removes the pair with it, off our
    path.  Deleting it here took ~25 ms of each stop (unregistering a
    device waits for an RCU grace period)."""
    if not veth_dies:
        links.delete_link(veth)
    state.drop_lease(rec.name, ip)
    if Network(rec.name).resolves_peers:
        with contextlib.suppress(OSError):
            hosts.set_slot(os.path.join(state.net_dir(rec.name), "hosts"), rec.net, ip, None)
    if not state.lease_ips(rec.name):
        if not rec.persistent:
            _remove_network(rec)
            return
        _compact_hosts(rec)
    if has_rules:
        _sync_rules()


def _compact_hosts(rec: state.Record) -> None:
    """Under the lock, with no lease left on the network: its hosts file back
    to the header alone (it only grows while sandboxes use it: hosts.py).
    Safe now and only now: a sandbox binds the file once it holds a lease,
    and leaves it when its init is gone, before the lease goes; so with no
    lease no sandbox has it mounted, and every writer holds this lock."""
    if Network(rec.name).resolves_peers:
        with contextlib.suppress(OSError):
            hosts.create(os.path.join(state.net_dir(rec.name), "hosts"))


def _rule_leases() -> list[state.Lease]:
    return [
        lease
        for r in state.records()
        for lease in state.leases(r.name)
        if (lease.publish or lease.egress is not None) and lease.alive()
    ]


def _sync_rules() -> None:
    nft.sync(state.records(), _rule_leases())


def _pick_subnet() -> str:
    taken = [r.net for r in state.records()]
    ours = {r.bridge for r in state.records()}
    for cand in ipaddress.IPv4Network(AUTO_RANGE).subnets(new_prefix=AUTO_PREFIX):
        if not any(cand.overlaps(t) for t in taken) and not links.host_routes_overlapping(cand, ours):
            return str(cand)
    raise HostError(f"no free /{AUTO_PREFIX} left in {AUTO_RANGE}: give Network(subnet=...)")


def _ensure_network(net: Network) -> state.Record:
    rec = state.read_record(net.name)
    if rec is not None:
        want = (net.subnet or rec.subnet, net.internal, net.persistent)
        if want != (rec.subnet, rec.internal, rec.persistent):
            raise ConfigError(
                "network",
                f"network {net.name!r} exists with subnet={rec.subnet!r}, internal={rec.internal}, "
                f"persistent={rec.persistent}: pass the same settings, or remove it first "
                "(`sandbox gc --networks` once no sandbox uses it)",
            )
        _repair_files(rec)
        if links.ensure_bridge(rec.bridge, rec.gateway, rec.net.prefixlen, _uplink_mtu()):
            _sync_rules()  # the bridge was gone (a crash while it was removed): its rules too
        return rec
    recs = state.records()
    subnet = net.subnet or _pick_subnet()
    sn = ipaddress.IPv4Network(subnet)
    for r in recs:
        if r.net.overlaps(sn):
            raise ConfigError("Network.subnet", f"{subnet} overlaps network {r.name!r} ({r.subnet})")
        if r.bridge == net.bridge:
            raise ConfigError("Network.name", f"{net.name!r} maps to the bridge of network {r.name!r}")
    clash = links.host_routes_overlapping(sn, {r.bridge for r in recs})
    if clash:
        raise ConfigError(
            "Network.subnet", f"{subnet} overlaps the host's route {clash[0]}: pick another subnet"
        )
    rec = state.Record(net.name, subnet, net.bridge, net.internal, net.persistent)
    # The files before the record: a crash between them leaves a dir with no
    # record, which the next start of this network overwrites and gc removes
    # (with the record first, that start found no hosts file to write to).
    state.make_network_dir(rec.name)
    _write_files(rec)
    state.write_record(rec)
    try:
        if not net.internal:
            _forwarding_on()
        links.ensure_bridge(rec.bridge, rec.gateway, sn.prefixlen, _uplink_mtu())
        _sync_rules()
    except BaseException:
        _remove_network(rec)
        raise
    return rec


def _write_files(rec: state.Record) -> None:
    d = state.net_dir(rec.name)
    state.write_atomic(os.path.join(d, "resolv.conf"), hosts.resolv_conf())
    if Network(rec.name).resolves_peers:
        hosts.create(os.path.join(d, "hosts"))


def _repair_files(rec: state.Record) -> None:
    """Under the lock: the files of a network whose record was written before
    them (by an older version) by an owner that died in between; the hosts
    file with the lines of its live sandboxes (none can have it mounted: it
    was not there).  Two stat()s when nothing is missing."""
    d = state.net_dir(rec.name)
    resolv = os.path.join(d, "resolv.conf")
    if not os.path.exists(resolv):
        state.write_atomic(resolv, hosts.resolv_conf())
    path = os.path.join(d, "hosts")
    if Network(rec.name).resolves_peers and not os.path.exists(path):
        hosts.create(path)
        for lease in state.leases(rec.name):
            if lease.alive() and lease.hostname:
                hosts.set_slot(path, rec.net, lease.ip, lease.hostname)


def _allocate(rec: state.Record, veth: str, hostname: str, opts: NetOptions) -> str:
    pid, start = state.me()
    lease = state.Lease(
        "",
        pid,
        start,
        veth,
        hostname,
        [(p.proto, p.host, p.sandbox) for p in opts.publish],
        None if opts.egress is None else list(opts.egress),
    )
    # Round-robin from where the last allocation stopped: an address just
    # freed is not handed out again at once, while the neighbour entries and
    # the bridge's forwarding entry of its old veth may still be around.
    cursor = os.path.join(state.net_dir(rec.name), "next")
    try:
        with open(cursor) as f:
            start_at = int(f.read().strip() or 0)
    except (OSError, ValueError):
        start_at = 0
    base, size = int(rec.net.network_address), rec.net.num_addresses
    gw = int(ipaddress.IPv4Address(rec.gateway))
    for attempt in range(2):
        used = state.lease_ips(rec.name)
        for k in range(size):
            n = base + 2 + (start_at + k) % (size - 3)  # .2 up to the last host address
            ip = str(ipaddress.IPv4Address(n))
            if n == gw or ip in used:
                continue
            lease.ip = ip
            if state.take_lease(rec.name, lease):
                state.write_atomic(cursor, str(n - base - 1))
                return ip
        if attempt == 0:
            _sweep(rec)
    raise HostError(f"network {rec.name!r} ({rec.subnet}) has no free address: close some sandboxes")


def _sweep(rec: state.Record) -> list[str]:
    """Under the lock: drop the leases of dead owners, with their veths and
    hosts lines.  What was dropped, for gc's report."""
    gone = []
    rules = False
    for lease in state.leases(rec.name):
        if lease.alive():
            continue
        if lease.veth:
            links.delete_link(lease.veth)
        state.drop_lease(rec.name, lease.ip)
        if Network(rec.name).resolves_peers:
            with contextlib.suppress(OSError):
                hosts.set_slot(os.path.join(state.net_dir(rec.name), "hosts"), rec.net, lease.ip, None)
        rules = rules or bool(lease.publish) or lease.egress is not None
        gone.append(f"lease {rec.name}/{lease.ip} (pid {lease.pid})")
    if gone and not state.lease_ips(rec.name):
        _compact_hosts(rec)
    if rules:
        _sync_rules()
    return gone


# ip_forward: routing between our bridges and the uplink needs it (NAT
# egress); published ports and traffic within a network do not.  It is
# turned on with the first non-internal network, and put back as it was
# when the last one goes (the old value waits in the state dir).

FORWARD = "net/ipv4/ip_forward"


def _forwarding_on() -> None:
    saved = os.path.join(state.root(), FORWARD_SAVED)
    cur = links.read_sysctl(FORWARD)
    if not os.path.exists(saved):
        state.write_atomic(saved, cur)
    if cur != "1":
        links.sysctl(FORWARD, "1")


def _forwarding_restore() -> None:
    if any(not r.internal for r in state.records()):
        return
    saved = os.path.join(state.root(), FORWARD_SAVED)
    try:
        with open(saved) as f:
            old = f.read().strip()
    except FileNotFoundError:
        return
    if old == "0":
        links.sysctl(FORWARD, "0")
    os.unlink(saved)


def _remove_network(rec: state.Record) -> None:
    links.delete_link(rec.bridge)
    state.remove_network_dir(rec.name)
    _swept.discard(rec.name)
    _sync_rules()
    _forwarding_restore()


def _gc(networks: bool) -> list[str]:
    removed: list[str] = []
    with state.locked():
        live_veths: set[str] = set()
        for rec in state.records():
            removed += _sweep(rec)
            live = state.leases(rec.name)
            live_veths |= {lease.veth for lease in live}
            if not live and (networks or not rec.persistent):
                _remove_network(rec)
                removed.append(f"network {rec.name} (bridge {rec.bridge})")
        for name in state.network_names():
            if state.read_record(name) is None:  # a crash while it was made or removed
                state.remove_network_dir(name)
                removed.append(f"state of network {name}")
        bridges = {r.bridge for r in state.records()}
        for link in links.our_links():
            stale_veth = link.startswith(links.VETH_PREFIX) and link not in live_veths
            stale_bridge = not link.startswith(links.VETH_PREFIX) and link not in bridges
            if (stale_veth or stale_bridge) and links.delete_link(link):
                removed.append(f"link {link}")
        had = nft.tables()
        _sync_rules()
        if had and not state.records():
            removed += [f"nftables table {t}" for t in had]
        _forwarding_restore()
    return removed


def gc(networks: bool = False) -> list[str]:
    """Reclaim what dead owners left: leases, veths, hosts lines, rules, and
    networks no sandbox uses (persistent ones too with networks=True).
    Returns what was removed, one line each."""
    return links.call(_gc, networks)
