"""Our nftables rules: two tables of our own, `inet sandbox` and `bridge
sandbox`; nothing else on the host is read, flushed or touched.

Why libnftables' JSON interface, through ctypes: it is nftables' own stable
API (libnftables-json(5)), the same the `nft -j` command and the Python
bindings use, with every feature the kernel has (concatenations, interval
sets, maps with NAT data); pyroute2's nftables module builds expressions
by hand and covers a fraction of them.  Debian's python3-nftables binds
the system Python only, so the 20-line binding is here; calling the library
saves a process per change (a fork of a big interpreter costs ~10 ms).

The rules are fixed; what changes are set elements (networks, published
ports, egress lists), so a sandbox's start never registers a hook (a base
chain change waits for an RCU grace period: ~10 ms).  Every change
rewrites all elements from the state directory in one transaction, under
the state lock: the kernel's view cannot drift from the leases, and `gc`
is the same operation after dropping stale leases."""

from __future__ import annotations

import ctypes
import json
import os
import threading
from collections.abc import Iterable
from typing import Any

from ..errors import HostError
from .state import Lease, Record

TABLE = "sandbox"
JSON_OUTPUT = 1 << 4  # NFT_CTX_OUTPUT_JSON

_lib: Any = None
_lib_lock = threading.Lock()


def _nft() -> Any:
    global _lib
    with _lib_lock:
        if _lib is None:
            try:
                lib = ctypes.CDLL("libnftables.so.1")
            except OSError as e:
                raise HostError(
                    f"bridge networking needs libnftables ({e}): apt-get install nftables"
                ) from None
            lib.nft_ctx_new.restype = ctypes.c_void_p
            lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
            lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
            lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
            for fn in (
                lib.nft_ctx_buffer_output,
                lib.nft_ctx_buffer_error,
                lib.nft_ctx_unbuffer_output,
                lib.nft_ctx_unbuffer_error,
            ):
                fn.argtypes = [ctypes.c_void_p]
            for fn in (lib.nft_ctx_get_output_buffer, lib.nft_ctx_get_error_buffer):
                fn.argtypes = [ctypes.c_void_p]
                fn.restype = ctypes.c_char_p
            lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
            _lib = lib
        return _lib


# One context per process, made early (see warm_up): libnftables opens its
# netlink socket in nft_ctx_new and waits on it with select(), which aborts
# the whole process (glibc's fd_set check) once that fd is 1024 or more,
# as it was with 200 sandboxes running (measured: SIGABRT in
# nft_run_cmd_from_buffer).  A context made while fds are few keeps a low one.
_ctx: dict[int, Any] = {}  # pid -> context (a forked child makes its own)
_run_lock = threading.Lock()


def _after_fork() -> None:
    # A child forked while another thread held one of these would wait on
    # it for ever at its first network call: that thread is not in it.
    global _lib_lock, _run_lock
    _lib_lock, _run_lock = threading.Lock(), threading.Lock()


os.register_at_fork(after_in_child=_after_fork)


def _context() -> Any:
    lib = _nft()
    ctx = _ctx.get(os.getpid())
    if ctx is None:
        before = _netlink_fds()
        ctx = lib.nft_ctx_new(0)
        if not ctx:
            raise HostError("nft_ctx_new failed")
        if any(fd >= FD_SETSIZE for fd in _netlink_fds() - before):
            lib.nft_ctx_free(ctx)
            raise HostError(
                f"libnftables needs its netlink socket below fd {FD_SETSIZE} (it uses select()), and this "
                "process has more fds open: start the first bridge-mode sandbox earlier, or call "
                "sandbox.network.nft.warm_up() at startup"
            )
        lib.nft_ctx_output_set_flags(ctx, JSON_OUTPUT)
        _ctx[os.getpid()] = ctx
    return ctx


FD_SETSIZE = 1024


def _netlink_fds() -> set[int]:
    out = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                out.add(int(name))
        except OSError:
            pass
    return out


def warm_up() -> None:
    """Make the context now, while this process has few fds open."""
    try:
        with _run_lock:
            _context()
    except HostError:
        pass  # no libnftables: bridge mode will say so when it is asked for


def run(cmds: list[dict[str, Any]]) -> dict[str, Any]:
    """One transaction of JSON commands; the JSON output (for `list`)."""
    lib = _nft()
    with _run_lock:
        ctx = _context()
        # fresh buffers for each run
        lib.nft_ctx_buffer_output(ctx)
        lib.nft_ctx_buffer_error(ctx)
        try:
            rc = lib.nft_run_cmd_from_buffer(ctx, json.dumps({"nftables": cmds}).encode())
            out = lib.nft_ctx_get_output_buffer(ctx) or b""
            err = lib.nft_ctx_get_error_buffer(ctx) or b""
        finally:
            lib.nft_ctx_unbuffer_output(ctx)
            lib.nft_ctx_unbuffer_error(ctx)
    if rc != 0:
        raise HostError(f"nftables refused our rules: {err.decode(errors='replace').strip()[:2000]}")
    return json.loads(out) if out.strip() else {}


# -- the fixed part ----------------------------------------------------------------


def _m(left: Any, right: Any, op: str = "==") -> dict[str, Any]:
    return {"match": {"op": op, "left": left, "right": right}}


def _meta(key: str) -> dict[str, Any]:
    return {"meta": {"key": key}}


def _ip(field: str) -> dict[str, Any]:
    return {"payload": {"protocol": "ip", "field": field}}


CT_NEW = _m({"ct": {"key": "state"}}, "new", "in")
NOT_DNAT = _m({"ct": {"key": "status"}}, "dnat", "!")
IS_DNAT = _m({"ct": {"key": "status"}}, "dnat", "in")
LOCAL_DST = _m({"fib": {"result": "type", "flags": ["daddr"]}}, "local")
IPV4 = _m(_meta("nfproto"), "ipv4")
LOOPNET = {"prefix": {"addr": "127.0.0.0", "len": 8}}

# inet sandbox: sets and maps (name -> (type, flags, is_map data type))
INET_SETS: dict[str, tuple[Any, list[str], Any]] = {
    "bridges": ("ifname", [], None),  # every bridge of ours
    "brself": (["ifname", "ifname"], [], None),  # (b, b): traffic within one network
    "internal": ("ifname", [], None),  # bridges of internal networks
    "nat_nets": ("ipv4_addr", ["interval"], None),  # subnets that masquerade out
    "restricted": ("ipv4_addr", [], None),  # sandboxes with an egress allow-list
    "egress": (["ipv4_addr", "ipv4_addr"], ["interval"], None),  # (sandbox, allowed range)
    # host port -> sandbox address, and -> sandbox port (two maps: nft 1.0.6's
    # JSON parser crashes on a map with concatenated NAT data)
    "pub_tcp": ("inet_service", [], "ipv4_addr"),
    "pub_tcp_port": ("inet_service", [], "inet_service"),
    "pub_udp": ("inet_service", [], "ipv4_addr"),
    "pub_udp_port": ("inet_service", [], "inet_service"),
}
BRIDGE_SETS: dict[str, tuple[Any, list[str], Any]] = {
    "rports": ("ifname", [], None),  # host veths of sandboxes with an egress list
    "rport_ip": (["ifname", "ipv4_addr"], [], None),  # (veth, its only source address)
}


def _publish_rules() -> list[list[dict[str, Any]]]:
    out = []
    for proto in ("tcp", "udp"):
        dport = {"payload": {"protocol": proto, "field": "dport"}}
        out.append(
            [
                IPV4,
                LOCAL_DST,
                _m(_meta("l4proto"), proto),
                {
                    "dnat": {
                        "family": "ip",
                        "addr": {"map": {"key": dport, "data": f"@pub_{proto}"}},
                        "port": {"map": {"key": dport, "data": f"@pub_{proto}_port"}},
                    }
                },
            ]
        )
    return out


# chain name -> (family, type, hook, priority, rules)
CHAINS: dict[str, tuple[str, str, str, int, list[list[dict[str, Any]]]]] = {
    "prefilter": (
        "inet",
        "filter",
        "prerouting",
        -150,
        [
            # route_localnet is on for our bridges (published ports answer at
            # 127.0.0.1): never let a sandbox address the host's loopback
            # (CVE-2020-8558)
            [_m(_meta("iifname"), "@bridges"), _m(_ip("daddr"), LOOPNET), {"drop": None}],
            # the egress allow-list, on what the sandbox asked for (before DNAT);
            # bridged traffic passes here too (nf_call_iptables on our bridges)
            [
                _m(_ip("saddr"), "@restricted"),
                CT_NEW,
                _m({"concat": [_ip("saddr"), _ip("daddr")]}, "@egress", "!="),
                {"reject": {"type": "icmpx", "expr": "admin-prohibited"}},
            ],
        ],
    ),
    "forward": (
        "inet",
        "filter",
        "forward",
        0,
        [
            # networks are isolated from each other
            [
                _m(_meta("iifname"), "@bridges"),
                _m(_meta("oifname"), "@bridges"),
                _m({"concat": [_meta("iifname"), _meta("oifname")]}, "@brself", "!="),
                {"drop": None},
            ],
            # internal networks have no way out, nor in
            [_m(_meta("iifname"), "@internal"), _m(_meta("oifname"), "@bridges", "!="), {"drop": None}],
            [_m(_meta("oifname"), "@internal"), _m(_meta("iifname"), "@bridges", "!="), {"drop": None}],
            # from outside, only published ports and replies come in
            [
                _m(_meta("oifname"), "@bridges"),
                _m(_meta("iifname"), "@bridges", "!="),
                CT_NEW,
                NOT_DNAT,
                {"drop": None},
            ],
        ],
    ),
    "nat_pre": ("inet", "nat", "prerouting", -100, _publish_rules()),
    "nat_out": ("inet", "nat", "output", -100, _publish_rules()),
    "nat_post": (
        "inet",
        "nat",
        "postrouting",
        100,
        [
            # published ports reached from the host's 127.0.0.1, and from a
            # sandbox through a host address (hairpin): answers must come back
            # through the host
            [IPV4, _m(_meta("oifname"), "@bridges"), _m(_ip("saddr"), LOOPNET), {"masquerade": None}],
            [
                IPV4,
                _m(_meta("oifname"), "@bridges"),
                IS_DNAT,
                _m(_ip("saddr"), "@nat_nets"),
                {"masquerade": None},
            ],
            # egress NAT
            [_m(_ip("saddr"), "@nat_nets"), _m(_meta("oifname"), "@bridges", "!="), {"masquerade": None}],
        ],
    ),
    "antispoof": (
        "bridge",
        "filter",
        "prerouting",
        -300,
        [
            # a sandbox with an egress list keeps its own address: IPv4 and
            # ARP only, from its address only
            [
                _m(_meta("iifname"), "@rports"),
                _m(_meta("protocol"), {"set": ["ip", "arp"]}, "!="),
                {"drop": None},
            ],
            [
                _m(_meta("iifname"), "@rports"),
                _m(_meta("protocol"), "ip"),
                _m({"concat": [_meta("iifname"), _ip("saddr")]}, "@rport_ip", "!="),
                {"drop": None},
            ],
            [
                _m(_meta("iifname"), "@rports"),
                _m(_meta("protocol"), "arp"),
                _m(
                    {"concat": [_meta("iifname"), {"payload": {"protocol": "arp", "field": "saddr ip"}}]},
                    "@rport_ip",
                    "!=",
                ),
                {"drop": None},
            ],
        ],
    ),
}


def _tables() -> list[tuple[str, dict[str, tuple[Any, list[str], Any]]]]:
    return [("inet", INET_SETS), ("bridge", BRIDGE_SETS)]


def skeleton() -> list[dict[str, Any]]:
    """Both tables made anew (add then delete: deleting a table that is not
    there would fail the transaction)."""
    cmds: list[dict[str, Any]] = []
    for fam, sets in _tables():
        t = {"family": fam, "name": TABLE}
        cmds += [{"add": {"table": t}}, {"delete": {"table": t}}, {"add": {"table": t}}]
        for name, (typ, flags, data) in sets.items():
            s: dict[str, Any] = {"family": fam, "table": TABLE, "name": name, "type": typ}
            if flags:
                s["flags"] = flags
            if data is None:
                cmds.append({"add": {"set": s}})
            else:
                s["map"] = data
                cmds.append({"add": {"map": s}})
    for name, (fam, typ, hook, prio, rules) in CHAINS.items():
        cmds.append(
            {
                "add": {
                    "chain": {
                        "family": fam,
                        "table": TABLE,
                        "name": name,
                        "type": typ,
                        "hook": hook,
                        "prio": prio,
                        "policy": "accept",
                    }
                }
            }
        )
        for expr in rules:
            cmds.append({"add": {"rule": {"family": fam, "table": TABLE, "chain": name, "expr": expr}}})
    return cmds


def exists() -> bool:
    try:
        run([{"list": {"table": {"family": "inet", "name": TABLE}}}])
        run([{"list": {"table": {"family": "bridge", "name": TABLE}}}])
    except HostError:
        return False
    return True


def remove() -> None:
    """Both tables gone (a no-op when they are)."""
    cmds = []
    for fam, _ in _tables():
        t = {"family": fam, "name": TABLE}
        cmds += [{"add": {"table": t}}, {"delete": {"table": t}}]
    run(cmds)


def _range(cidr: str) -> dict[str, Any]:
    import ipaddress

    n = ipaddress.IPv4Network(cidr)
    return {"range": [str(n.network_address), str(n.broadcast_address)]}


def elements(recs: Iterable[Record], leases: Iterable[Lease]) -> dict[str, list[Any]]:
    """Every set's elements, from the networks and the live leases."""
    el: dict[str, list[Any]] = {n: [] for n in (*INET_SETS, *BRIDGE_SETS)}
    for r in recs:
        el["bridges"].append(r.bridge)
        el["brself"].append({"concat": [r.bridge, r.bridge]})
        if r.internal:
            el["internal"].append(r.bridge)
        else:
            el["nat_nets"].append(_range(r.subnet))
    for lease in leases:
        for p in lease.ports:
            el[f"pub_{p.proto}"].append([p.host, lease.ip])
            el[f"pub_{p.proto}_port"].append([p.host, p.sandbox])
        if lease.egress is not None:
            el["restricted"].append(lease.ip)
            el["egress"] += [{"concat": [lease.ip, _range(c)]} for c in lease.egress]
            el["rports"].append(lease.veth)
            el["rport_ip"].append({"concat": [lease.veth, lease.ip]})
    return el


def sync(recs: list[Record], leases: list[Lease]) -> None:
    """Make the kernel's sets say what the state says, in one transaction
    (the tables are made when missing); no network left: no tables."""
    if not recs:
        remove()
        return
    cmds = [] if exists() else skeleton()
    el = elements(recs, leases)
    for fam, sets in _tables():
        for name, (_, _, data) in sets.items():
            kind = "set" if data is None else "map"
            ref = {"family": fam, "table": TABLE, "name": name}
            cmds.append({"flush": {kind: ref}})
            if el[name]:
                cmds.append({"add": {"element": {**ref, "elem": el[name]}}})
    run(cmds)


def add(lease: Lease) -> None:
    """One new sandbox's elements, added (no flush: removing elements waits
    for an RCU grace period, ~5-10 ms a transaction; adding does not)."""
    el = elements([], [lease])
    cmds = []
    for fam, sets in _tables():
        for name in sets:
            if el[name]:
                ref = {"family": fam, "table": TABLE, "name": name}
                cmds.append({"add": {"element": {**ref, "elem": el[name]}}})
    if cmds:
        run(cmds)


def tables() -> list[str]:
    """Our tables that exist, as "family name" (for leak checks and gc)."""
    out = run([{"list": {"tables": None}}])
    return [
        f"{t['table']['family']} {t['table']['name']}"
        for t in out.get("nftables", [])
        if "table" in t and t["table"].get("name") == TABLE
    ]
