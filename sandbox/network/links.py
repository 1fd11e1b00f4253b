"""Links, addresses and routes, through pyroute2, on one worker thread.

Why a thread of our own: pyroute2's synchronous IPRoute runs an asyncio
loop of its own and fails in a thread whose loop is running (an
AsyncSandbox under asyncio); and a sandbox's side is configured from a
netlink socket made inside its network namespace, which needs a thread
that may setns() there and back with no other Python code on it
(pyroute2's own netns support forks a helper process per socket: ~10 ms).

Names: our bridges are sbx-NAME, host ends of veths sbxv-TOKEN (the token
is in the lease); the sandbox's end is made directly inside its namespace,
as eth0, so no name of the host is ever taken by it."""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import ipaddress
import os
import socket
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from .. import interrupts
from ..errors import HostError

BRIDGE_PREFIX = "sbx-"
VETH_PREFIX = "sbxv-"
CLONE_NEWNET = 0x40000000
NETLINK_ROUTE = 0

T = TypeVar("T")
_pool: concurrent.futures.ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
_worker_ident: int | None = None


def _mark_worker() -> None:
    global _worker_ident
    _worker_ident = threading.get_ident()


def call(fn: Callable[..., T], *args: Any, undo: Callable[[T], object] | None = None) -> T:
    """Run fn on the network thread and wait (inline when already on it).

    `undo`: what takes back fn's result when the wait is cut short (a
    KeyboardInterrupt in the caller's thread): fn runs on regardless, and
    what it made (an address lease, its rules, a network) was held by
    nobody for the rest of the process.  The interrupt is raised once fn is
    over and its result undone."""
    global _pool
    if threading.get_ident() == _worker_ident:
        return fn(*args)
    with _pool_lock:
        if _pool is None:
            _pool = concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix="sandbox-net", initializer=_mark_worker
            )
        pool = _pool
    fut = pool.submit(fn, *args)
    try:
        return fut.result()
    except BaseException:
        if undo is not None:
            with interrupts.deferred():
                concurrent.futures.wait([fut])
                if fut.exception() is None:  # (else it was fn's own: fn undid itself)
                    # the interrupt is what the caller must see: should the undo
                    # fail, what is left is reclaimed once this process is gone
                    with contextlib.suppress(Exception):
                        pool.submit(undo, fut.result()).result()
        raise


def _after_fork() -> None:
    # (the lock too: held by another thread at the fork, it stayed held in the child for good)
    global _pool, _pool_lock, _worker_ident
    _pool, _pool_lock, _worker_ident = None, threading.Lock(), None


os.register_at_fork(after_in_child=_after_fork)


def _iproute(fileno: int | None = None) -> Any:
    from pyroute2 import IPRoute  # ~150 ms to import: only for bridge mode

    return IPRoute(fileno=fileno) if fileno is not None else IPRoute()


_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"setns: {os.strerror(e)}")


def _socket_in(netns_fd: int) -> socket.socket:
    """A netlink socket of the namespace `netns_fd` (a socket stays in the
    namespace it was made in); this thread comes back to its own at once."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(netns_fd)
        try:
            return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        finally:
            try:
                _setns(own)
            except OSError:  # pragma: no cover - cannot happen for a namespace we were in
                sys.stderr.write("sandbox: setns back to the host network namespace failed; aborting\n")
                os.abort()  # never run on in a sandbox's namespace
    finally:
        os.close(own)


def sysctl(path: str, value: str) -> None:
    with open(f"/proc/sys/{path}", "w") as f:
        f.write(value)


def read_sysctl(path: str) -> str:
    with open(f"/proc/sys/{path}") as f:
        return f.read().strip()


def _index(ipr: Any, name: str) -> int | None:
    """One RTM_GETLINK by name (link_lookup dumps every link: slow with
    hundreds of veths)."""
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        found = ipr.link("get", ifname=name)
    except NetlinkError as e:
        if e.code in (19, 2):  # ENODEV, ENOENT
            return None
        raise
    return int(found[0]["index"]) if found else None


def uplink_mtu() -> int:
    """The MTU of the device the host's default route goes through (1500
    without one): a sandbox's packets must fit it unfragmented."""
    with _iproute() as ipr:
        for r in ipr.get_default_routes(family=socket.AF_INET):
            oif = r.get("RTA_OIF") or r.get("oif")
            if oif:
                links = ipr.get_links(oif)
                if links:
                    return int(links[0].get("IFLA_MTU") or links[0].get("mtu") or 1500)
    return 1500


def host_routes_overlapping(subnet: ipaddress.IPv4Network, ours: set[str]) -> list[str]:
    """Routes of the host (not through our bridges) that overlap `subnet`."""
    out = []
    with _iproute() as ipr:
        names = {int(ln["index"]): ln.get("IFLA_IFNAME") or ln.get("ifname") for ln in ipr.get_links()}
        for r in ipr.get_routes(family=socket.AF_INET, table=254):
            dst = r.get("RTA_DST") or r.get("dst")
            if not dst:
                continue  # the default route overlaps everything: it is not a conflict
            net = ipaddress.IPv4Network(f"{dst}/{r['dst_len']}", strict=False)
            dev = names.get(int(r.get("RTA_OIF") or r.get("oif") or 0), "?")
            if dev not in ours and net.overlaps(subnet):
                out.append(f"{net} dev {dev}")
    return out


def ensure_bridge(name: str, gateway: str, prefix: int, mtu: int) -> bool:
    """Our bridge, up, with the gateway address; True when it was made now."""
    with _iproute() as ipr:
        if _index(ipr, name) is not None:
            return False
        # nf_call_iptables on this bridge only: bridged traffic between its
        # sandboxes passes the inet hooks, so egress lists hold there too
        # (when br_netfilter is loaded: check_bridge_filtering)
        ipr.link("add", ifname=name, kind="bridge", mtu=mtu, br_nf_call_iptables=1)
        idx = _index(ipr, name)
        if idx is None:  # pragma: no cover
            raise HostError(f"the bridge {name} vanished as it was made")
        try:
            # no IPv6 on our bridge: the host is reachable from sandboxes
            # only at the gateway address, only over IPv4
            sysctl(f"net/ipv6/conf/{name}/disable_ipv6", "1")
            # published ports answer at 127.0.0.1: packets DNAT'd from the
            # host's loopback leave through this bridge (see nft.py's guard)
            sysctl(f"net/ipv4/conf/{name}/route_localnet", "1")
            ipr.addr("add", index=idx, address=gateway, prefixlen=prefix)
            ipr.link("set", index=idx, state="up")
        except BaseException:
            with contextlib.suppress(Exception):
                ipr.link("del", index=idx)
            raise
        return True


# Where the kernel says whether bridged traffic passes the inet hooks (the
# roots are parameters for the tests).
SYSFS = "/sys"
PROCFS = "/proc"
MODPROBE_FIX = (
    "run `modprobe br_netfilter` (it turns bridge-nf-call-iptables on for every bridge of the host: "
    "`sysctl -w net.bridge.bridge-nf-call-iptables=0` puts that back, ours have a setting of their own)"
)


def check_bridge_filtering(bridge: str, sysfs: str | None = None, procfs: str | None = None) -> None:
    """Raise HostError unless IPv4 traffic bridged between the ports of
    `bridge` (one sandbox to another of its network) passes the inet hooks,
    where egress lists are checked.

    Two things must hold (net/bridge/br_netfilter_hooks.c, br_nf_pre_routing):
    the bridge's own nf_call_iptables (set when we make it; the sysfs file
    exists only in kernels built with CONFIG_BRIDGE_NETFILTER), and the
    br_netfilter hooks, registered only while that module is loaded:
    with CONFIG_BRIDGE_NETFILTER=m and the module absent, the option is
    accepted and does nothing.  The module's sysctls, per network namespace
    (read here from this thread's, the bridge's), exist exactly while it
    is loaded.

    We do not load it: Docker does (only when it needs it, moby#48492), but
    loading it turns bridge-nf-call-iptables on for every bridge of the host
    (libvirt's, LXC's), whose traffic a host firewall that drops forwarded
    packets then drops (moby#48375): the host's admin decides that."""
    sysfs, procfs = sysfs or SYSFS, procfs or PROCFS
    opt = os.path.join(sysfs, "class/net", bridge, "bridge/nf_call_iptables")
    try:
        with open(opt) as f:
            on = f.read().strip() == "1"
        if not on:  # a bridge of ours made without it (by hand, or an older version): set it
            with open(opt, "w") as f:
                f.write("1")
            with open(opt) as f:
                on = f.read().strip() == "1"
    except FileNotFoundError:
        raise HostError(
            f"egress: this kernel cannot filter traffic between sandboxes of one bridge ({opt} is "
            "missing: built without CONFIG_BRIDGE_NETFILTER), so an egress list would not hold "
            "towards the sandbox's peers: use a kernel with br_netfilter, or no egress="
        ) from None
    if not on:
        raise HostError(f"egress: {opt} stays 0: traffic bridged between sandboxes would not be filtered")
    if not os.path.exists(os.path.join(procfs, "sys/net/bridge/bridge-nf-call-iptables")):
        raise HostError(
            "egress: the br_netfilter module is not loaded, so traffic between sandboxes of one "
            "network would pass unfiltered and an egress list would not hold towards the sandbox's "
            f"peers: {MODPROBE_FIX}"
        )


def delete_link(name: str) -> bool:
    """False when it was not there."""
    with _iproute() as ipr:
        idx = _index(ipr, name)
        if idx is None:
            return False
        try:
            ipr.link("del", index=idx)
        except Exception as e:  # gone meanwhile (its namespace died)
            if getattr(e, "code", None) in (19, 2):  # ENODEV, ENOENT
                return False
            raise
        return True


def add_veth(
    veth: str, netns_fd: int, bridge: str, mtu: int, address: str, prefix: int, gateway: str, mac: str
) -> None:
    """The sandbox's eth0 (inside `netns_fd`) and its host end on `bridge`."""
    with _iproute() as ipr:
        br = _index(ipr, bridge)
        if br is None:
            raise HostError(f"the bridge {bridge} is gone: another process removed it (run `sandbox gc`)")
        # one request: the pair, our end on the bridge and up, eth0 made
        # inside the sandbox's namespace
        ipr.link(
            "add",
            ifname=veth,
            kind="veth",
            mtu=mtu,
            master=br,
            state="up",
            peer={"ifname": "eth0", "mtu": mtu, "address": mac, "net_ns_fd": netns_fd},
        )
        sysctl(f"net/ipv6/conf/{veth}/disable_ipv6", "1")
    with _iproute(_socket_in(netns_fd).detach()) as ns:
        eth0 = _index(ns, "eth0")
        if eth0 is None:  # pragma: no cover
            raise HostError("the sandbox's eth0 is missing from its namespace")
        ns.addr("add", index=eth0, address=address, prefixlen=prefix)
        ns.link("set", index=eth0, state="up")
        ns.route("add", gateway=gateway)


def our_links() -> list[str]:
    with _iproute() as ipr:
        names = [ln.get("IFLA_IFNAME") or ln.get("ifname") for ln in ipr.get_links()]
    return [n for n in names if n and n.startswith((BRIDGE_PREFIX, VETH_PREFIX))]
