"""`sandbox doctor`'s bridge forwarding check reads the host's forward chains
(libnftables JSON): a base chain that drops forwarded traffic by default
cuts sandboxes on one network off from each other (a bridge family's
always, an IP family's when br_netfilter is on)."""

from __future__ import annotations

from sandbox import doctor


def _chain(family: str, hook: str, policy: str, name: str = "FORWARD") -> dict[str, object]:
    return {"chain": {"family": family, "table": "filter", "name": name, "type": "filter",
                      "hook": hook, "prio": 0, "policy": policy}}  # fmt: skip


def test_only_ip_forward_chains_that_drop_by_default_count() -> None:
    listing = {
        "nftables": [
            {"metainfo": {"version": "1.0.6"}},
            _chain("ip", "forward", "drop"),  # Docker's
            _chain("inet", "forward", "drop", "fw"),
            _chain("ip", "forward", "accept", "other"),
            _chain("ip", "input", "drop", "INPUT"),
            _chain("bridge", "forward", "drop", "br"),
            {"chain": {"family": "ip", "table": "t", "name": "regular"}},  # no hook: not a base chain
        ]
    }
    ip = ("ip", "ip6", "inet")
    assert doctor.forward_drops(listing, ip) == ["ip filter FORWARD", "inet filter fw"]
    assert doctor.forward_drops(listing, ("bridge",)) == ["bridge filter br"]
    assert doctor.forward_drops({}, ip) == []
    assert doctor.forward_drops({"nftables": "garbage"}, ip) == []


def test_egress_filtering_needs_br_netfilter_loaded(tmp_path) -> None:
    """Its sysctls exist exactly while the module is loaded."""
    bad = doctor.check_egress_filtering(str(tmp_path))
    assert bad.status == doctor.WARN and "egress=" in bad.detail and "modprobe br_netfilter" in bad.fix
    (tmp_path / "sys/net/bridge").mkdir(parents=True)
    (tmp_path / "sys/net/bridge/bridge-nf-call-iptables").write_text("1\n")
    assert doctor.check_egress_filtering(str(tmp_path)).status == doctor.OK
