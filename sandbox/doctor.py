"""`sandbox doctor`: what this host offers the sandboxes, and how to fix
what is missing.  Each check reads the host directly (files under /proc and
/sys, the libraries it needs); none of them changes anything."""

from __future__ import annotations

import ctypes.util
import importlib.util
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

OK, WARN, FAIL = "ok", "warn", "FAIL"


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _kernel() -> tuple[int, int]:
    try:
        major, minor = platform.release().split(".")[:2]
        return int(major), int(minor.split("-")[0])
    except ValueError:
        return (0, 0)


def check_root() -> Check:
    if os.geteuid() == 0:
        return Check("privileges", OK, "running as root: container ids map onto 100000:65536 by default")
    return Check(
        "privileges",
        FAIL,
        f"running as uid {os.geteuid()}",
        "run as root (non-root use needs newuidmap, not supported yet)",
    )


def check_userns() -> Check:
    n = _read("/proc/sys/user/max_user_namespaces")
    if n is not None and n.isdigit() and int(n) == 0:
        return Check(
            "user namespaces",
            FAIL,
            "user.max_user_namespaces = 0",
            "sysctl -w user.max_user_namespaces=15000",
        )
    apparmor = _read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns")
    if apparmor == "1" and os.geteuid() != 0:
        return Check(
            "user namespaces",
            FAIL,
            "AppArmor restricts unprivileged user namespaces",
            "sysctl -w kernel.apparmor_restrict_unprivileged_userns=0, or run as root",
        )
    old = _read("/proc/sys/kernel/unprivileged_userns_clone")
    if old == "0" and os.geteuid() != 0:
        return Check(
            "user namespaces",
            FAIL,
            "kernel.unprivileged_userns_clone = 0",
            "sysctl -w kernel.unprivileged_userns_clone=1, or run as root",
        )
    return Check("user namespaces", OK, f"allowed (max {n or 'unlimited'})")


def check_kernel() -> Check:
    k = _kernel()
    if k < (5, 12):
        return Check(
            "kernel", FAIL, f"{platform.release()}: no idmapped mounts (5.12+)", "use a newer kernel"
        )
    return Check("kernel", OK, f"{platform.release()}: idmapped mounts, openat2, close_range, pidfds")


def check_overlay() -> Check:
    fs = _read("/proc/filesystems") or ""
    if "overlay" not in fs.split():
        return Check("overlayfs", WARN, "not loaded yet (it may load on first use)", "modprobe overlay")
    return Check("overlayfs", OK, "available (mounted inside each sandbox's user namespace)")


def check_cgroups() -> Check:
    from . import cgroup

    r = cgroup.root()
    if r is None:
        return Check(
            "cgroups",
            WARN,
            f"not usable: {cgroup.why()}; sandboxes run without limits or cgroup accounting",
            "run as root on a host with the memory, pids and cpu controllers (v1 or v2)",
        )
    where = ", ".join(sorted(r.base.values())) if isinstance(r.base, dict) else r.base
    return Check("cgroups", OK, f"v{r.version}: sandbox groups go under {where}")


def check_seccomp() -> Check:
    status = _read("/proc/self/status") or ""
    if "Seccomp:" not in status:
        return Check("seccomp", FAIL, "the kernel has no seccomp", "use a kernel with CONFIG_SECCOMP_FILTER")
    if not ctypes.util.find_library("seccomp"):
        return Check("seccomp", FAIL, "libseccomp is missing", "apt-get install libseccomp2")
    return Check("seccomp", OK, "filters available, libseccomp found")


def check_nftables() -> Check:
    """Bridge networking: libnftables (through ctypes, not the nft command)
    for our rules, pyroute2 for links."""
    if not ctypes.util.find_library("nftables"):
        return Check(
            "bridge networking",
            WARN,
            'no libnftables: network="bridge" will not work',
            "apt-get install nftables",
        )
    if importlib.util.find_spec("pyroute2") is None:
        return Check("bridge networking", WARN, "pyroute2 is not installed", "pip install pyroute2")
    return Check("bridge networking", OK, 'libnftables and pyroute2 found (network="bridge" works)')


def check_egress_filtering(procfs: str = "/proc") -> Check:
    """Egress lists between sandboxes of one network pass the inet hooks
    only while br_netfilter is loaded: without it a sandbox with `egress=`
    refuses to start (network/links.py, check_bridge_filtering).  The
    module's sysctls exist exactly while it is loaded."""
    from .network.links import MODPROBE_FIX

    if os.path.exists(os.path.join(procfs, "sys/net/bridge/bridge-nf-call-iptables")):
        return Check("egress filtering", OK, "br_netfilter is loaded: egress lists hold between sandboxes")
    return Check(
        "egress filtering",
        WARN,
        "br_netfilter is not loaded: a sandbox on a bridge network with egress= will not start "
        "(its list would not hold towards the network's other sandboxes)",
        MODPROBE_FIX,
    )


def forward_drops(listing: dict[str, object], families: tuple[str, ...]) -> list[str]:
    """The base chains of a `list chains` JSON output (libnftables-json) of
    these families that drop forwarded traffic by default, as "family
    table chain"."""
    out = []
    items = listing.get("nftables", [])
    for item in items if isinstance(items, list) else []:
        c = item.get("chain") if isinstance(item, dict) else None
        if isinstance(c, dict) and c.get("hook") == "forward" and c.get("policy") == "drop":
            if c.get("family") in families:
                out.append(f"{c.get('family')} {c.get('table')} {c.get('name')}")
    return out


def check_bridge_forwarding() -> Check:
    """Frames between two sandboxes on one network (one bridge) pass the
    host's bridge forward chains, and with br_netfilter on its IP forward
    chains too: a drop policy there (Docker sets one on ip filter FORWARD)
    cuts them off from each other, whatever our own table accepts.  Only
    nftables chains are seen (not legacy iptables)."""
    name = "bridge forwarding"
    br_nf = _read("/proc/sys/net/bridge/bridge-nf-call-iptables") == "1"
    families = ("bridge", "ip", "ip6", "inet") if br_nf else ("bridge",)
    said = "br_netfilter on" if br_nf else "br_netfilter off"
    try:
        from .network import nft

        drops = forward_drops(nft.run([{"list": {"chains": {}}}]), families)
    except Exception as e:  # no libnftables, or it refused: the check above says which
        return Check(name, OK, f"{said}; the host's forward chains could not be listed ({e})")
    if not drops:
        return Check(name, OK, f"{said}; no nftables forward chain in the way drops by default")
    fix = 'accept the sbx-* bridges\' traffic in that chain (iifname "sbx-*" accept)'
    if br_nf:
        fix += ", or sysctl -w net.bridge.bridge-nf-call-iptables=0"
    return Check(
        name,
        WARN,
        f"{said}, and {', '.join(drops)} drops forwarded traffic by default: sandboxes on one "
        "network cannot reach each other",
        fix,
    )


def check_start() -> Check:
    """The real thing: a sandbox from the default rootfs (overlay of an
    idmapped layer inside a user namespace, pivot_root, an exec)."""
    from .cli import default_rootfs
    from .errors import SandboxError

    rootfs = default_rootfs()
    if not os.path.isdir(rootfs):
        return Check(
            "sandbox start",
            WARN,
            f"no default rootfs at {rootfs}",
            "build it: images/busybox/build-rootfs.sh " + rootfs,
        )
    try:
        from ._sync import Sandbox

        with Sandbox(rootfs=rootfs, seccomp=None) as sb:
            r = sb.exec(["true"])
    except SandboxError as e:
        return Check("sandbox start", FAIL, str(e), "see the checks above")
    if r.exit_code != 0:
        return Check("sandbox start", FAIL, f"`true` in a sandbox ended with {r.describe()}")
    return Check("sandbox start", OK, f"a sandbox from {rootfs} ran `true` in {r.wall_time * 1e3:.1f} ms")


CHECKS: tuple[Callable[[], Check], ...] = (
    check_root, check_kernel, check_userns, check_overlay, check_cgroups, check_seccomp, check_nftables,
    check_bridge_forwarding, check_egress_filtering, check_start,
)  # fmt: skip


def run() -> list[Check]:
    return [c() for c in CHECKS]


def report(checks: list[Check]) -> str:
    lines = []
    for c in checks:
        line = f"{c.status:>4}  {c.name}: {c.detail}"
        if c.fix and c.status != OK:
            line += f"\n      fix: {c.fix}"
        lines.append(line)
    return "\n".join(lines)
