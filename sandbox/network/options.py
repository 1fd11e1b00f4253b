"""The network options of a sandbox, validated before anything is made:
`network=` ("none", "bridge" or a Network), `publish=` and `egress=`.
Nothing here touches the host (no pyroute2, no nftables): a none-mode
sandbox pays for one isinstance() check."""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..errors import ConfigError

DEFAULT_NAME = "bridge"
# Docker's default bridge is 172.17.0.0/16; a neighbour of it, so that a
# host with Docker installed does not collide with us.
DEFAULT_SUBNET = "172.29.0.0/16"
# Named networks without a subnet get the first free /24 of this range.
AUTO_RANGE = "10.231.0.0/16"
AUTO_PREFIX = 24
IFNAMSIZ = 15
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
PROTOCOLS = ("tcp", "udp")
# A file of the state dir's top level, beside the networks' dirs (state.py):
# a network of that name made its dir there, so the host's old ip_forward
# was never saved, nor put back when the last network went.
FORWARD_SAVED = "ip_forward.saved"


@dataclass(frozen=True)
class Network:
    """A named network: sandboxes on it share a host bridge, reach each other
    and resolve each other by host name; other networks cannot reach them.

    `subnet`: an IPv4 network of at least 4 addresses, kept in canonical CIDR
    form (a netmask is turned into a prefix length); None takes the one the
    network already has, or the first free /24 of 10.231.0.0/16.
    `internal`: no NAT, no route out of the host (Docker's --internal).
    `persistent`: keep the bridge and its rules when the last sandbox
    leaves (removed by `sandbox gc --networks`); by default they go with it.
    """

    name: str
    subnet: str | None = None
    internal: bool = False
    persistent: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise ConfigError(
                "Network.name",
                f"{self.name!r}: use 1-63 lower-case letters, digits, '_', '.' or '-', starting alphanumeric",
            )
        if self.name.startswith(FORWARD_SAVED):  # (and its temporary files, FORWARD_SAVED.tmpPID)
            raise ConfigError(
                "Network.name", f"{self.name!r} is reserved (a file of the state dir): pick another"
            )
        if self.subnet is not None:
            # canonical CIDR: "10.88.0.0/255.255.255.0" is "10.88.0.0/24",
            # in the record, in the comparison with it and in conflicts
            object.__setattr__(self, "subnet", str(subnet_of(self.subnet)))
        for opt in ("internal", "persistent"):
            if not isinstance(getattr(self, opt), bool):
                raise ConfigError(f"Network.{opt}", f"expected True or False, got {getattr(self, opt)!r}")

    @property
    def bridge(self) -> str:
        """The host bridge's name: sbx-NAME when it fits in IFNAMSIZ, else a hash."""
        if len(self.name) <= IFNAMSIZ - 4 and "." not in self.name:
            return f"sbx-{self.name}"
        return "sbx-" + hashlib.sha256(self.name.encode()).hexdigest()[:8]

    @property
    def resolves_peers(self) -> bool:
        """Docker's default bridge does not resolve peers by name; named networks do."""
        return self.name != DEFAULT_NAME


def subnet_of(value: object) -> ipaddress.IPv4Network:
    if not isinstance(value, str):
        raise ConfigError("Network.subnet", f"expected a CIDR string such as '10.231.0.0/24', got {value!r}")
    try:
        net = ipaddress.ip_network(value, strict=True)
    except ValueError as e:
        try:  # host bits set: name the network they belong to
            hint = str(ipaddress.ip_network(value, strict=False))
        except ValueError:
            hint = "10.231.0.0/24"
        raise ConfigError("Network.subnet", f"{value!r}: {e}; write it as {hint!r}") from None
    if not isinstance(net, ipaddress.IPv4Network):
        raise ConfigError("Network.subnet", f"{value!r}: only IPv4 subnets are supported")
    if net.prefixlen > 30:
        raise ConfigError("Network.subnet", f"{value!r}: too small, use a /30 or larger (e.g. /24)")
    if net.is_loopback or net.is_multicast or net.is_link_local or net.is_reserved:
        raise ConfigError("Network.subnet", f"{value!r}: use a private range such as 10.231.0.0/24")
    return net


@dataclass(frozen=True)
class Port:
    proto: str
    host: int
    sandbox: int


@dataclass(frozen=True)
class NetOptions:
    """A bridge-mode sandbox's network, validated."""

    network: Network
    publish: tuple[Port, ...] = ()
    egress: tuple[str, ...] | None = None  # None: everything; a tuple: an allow-list


def _port(option: str, value: object, default_proto: str | None) -> tuple[int, str | None]:
    proto = default_proto
    if isinstance(value, str):
        num, _, p = value.partition("/")
        if p:
            if p not in PROTOCOLS:
                raise ConfigError(option, f"{value!r}: the protocol is tcp or udp")
            proto = p
        value = int(num) if num.isdigit() else num
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
        raise ConfigError(option, f"{value!r}: expected a port 1-65535, or 'PORT/udp'")
    return value, proto


def check(network: object, publish: object, egress: object) -> NetOptions | None:
    """None for network="none" (publish and egress must then be empty)."""
    if network == "none" or network is None:
        if publish:
            raise ConfigError("publish", 'needs a network: pass network="bridge" (or a Network)')
        if egress is not None:
            raise ConfigError("egress", 'needs a network: pass network="bridge" (or a Network)')
        return None
    if network == DEFAULT_NAME:
        net = Network(DEFAULT_NAME, DEFAULT_SUBNET)
    elif isinstance(network, Network):
        net = network
        if net.name == DEFAULT_NAME and net.subnet is None:
            net = Network(DEFAULT_NAME, DEFAULT_SUBNET, net.internal, net.persistent)
    else:
        raise ConfigError("network", f'expected "none", "bridge" or Network(name=...), got {network!r}')
    ports: list[Port] = []
    if publish is not None:
        if not isinstance(publish, Mapping):
            raise ConfigError("publish", "expected a mapping {host_port: sandbox_port}, e.g. {8080: 80}")
        seen = set()
        for hp, sp in publish.items():
            h, hproto = _port(f"publish[{hp!r}]", hp, None)
            s, sproto = _port(f"publish[{hp!r}]", sp, hproto)
            proto = sproto or "tcp"
            if hproto is not None and sproto != hproto:
                raise ConfigError(f"publish[{hp!r}]", "the host and sandbox ports must use one protocol")
            if (proto, h) in seen:
                raise ConfigError(f"publish[{hp!r}]", f"host port {h}/{proto} is given twice")
            seen.add((proto, h))
            ports.append(Port(proto, h, s))
        if ports and net.internal:
            raise ConfigError("publish", f"network {net.name!r} is internal: it has no published ports")
    allow: tuple[str, ...] | None = None
    if egress is not None:
        if isinstance(egress, (str, bytes)) or not isinstance(egress, Sequence):
            raise ConfigError("egress", "expected a list of CIDRs such as ['10.231.0.0/24'] ([] blocks all)")
        cidrs = []
        for i, c in enumerate(egress):
            try:
                n = ipaddress.ip_network(c, strict=False) if isinstance(c, str) else None
            except ValueError:
                n = None
            if not isinstance(n, ipaddress.IPv4Network):
                raise ConfigError(f"egress[{i}]", f"{c!r}: expected an IPv4 CIDR such as '192.0.2.0/24'")
            cidrs.append(str(n))
        allow = tuple(dict.fromkeys(cidrs))
    return NetOptions(net, tuple(ports), allow)
