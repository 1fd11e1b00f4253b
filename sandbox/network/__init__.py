"""Networking: `network="none"` (the default: a namespace with only `lo`),
`"bridge"` (the default network, like Docker's default bridge) or a named
`Network`; `publish={host_port: sandbox_port}`; `egress=[CIDR, ...]`.

Modules, one concern each: options (validation, no host access), state
(leases and records on disk, the lock), links (pyroute2, on one thread),
nft (our nftables tables), hosts (/etc/hosts and resolv.conf), lifecycle (the
order of it all, detach and gc).  Importing this package loads neither
pyroute2 nor libnftables: a none-mode sandbox never does."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .options import DEFAULT_NAME, DEFAULT_SUBNET, NetOptions, Network, check

if TYPE_CHECKING:
    from .lifecycle import Attachment

__all__ = [
    "DEFAULT_NAME",
    "DEFAULT_SUBNET",
    "NetOptions",
    "Network",
    "attach",
    "check",
    "detach",
    "gc",
    "warm_up",
]


def warm_up() -> None:
    """At the first bridge-mode Sandbox: libnftables' context, while fds are
    few (nft.py says why)."""
    from . import nft

    nft.warm_up()


def attach(opts: NetOptions, spec: object, netns_fd: int) -> Attachment:
    from . import lifecycle as _a

    return _a.attach(opts, spec, netns_fd)  # type: ignore[arg-type]


def detach(att: Attachment) -> None:
    from . import lifecycle as _a

    _a.detach(att)


def gc(networks: bool = False) -> list[str]:
    """Reclaim what crashed owners left (leases, veths, rules, unused
    networks); `networks=True` removes unused persistent networks too.
    Returns one line per thing removed."""
    from . import lifecycle as _a

    return _a.gc(networks)
