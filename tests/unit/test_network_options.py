"""The network's pure parts: option validation, the in-place hosts file,
the nftables elements a state maps to (no kernel, no root)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from sandbox import ConfigError, Network
from sandbox.network import hosts, nft, options
from sandbox.network.state import Lease, Record


def test_none_is_the_default_and_takes_no_ports() -> None:
    assert options.check("none", None, None) is None
    with pytest.raises(ConfigError, match=r"^publish: needs a network"):
        options.check("none", {80: 80}, None)


def test_bridge_is_the_default_network() -> None:
    o = options.check("bridge", {8080: 80, "5353/udp": 53}, ["10.1.0.0/16", "192.0.2.7"])
    assert o is not None
    assert o.network == Network("bridge", options.DEFAULT_SUBNET)
    assert not o.network.resolves_peers
    assert o.publish == (options.Port("tcp", 8080, 80), options.Port("udp", 5353, 53))
    assert o.egress == ("10.1.0.0/16", "192.0.2.7/32")


@pytest.mark.parametrize(
    ("publish", "option"),
    [
        ({0: 80}, "publish[0]"),
        ({"80/sctp": 80}, "publish['80/sctp']"),
        ({"x": 1}, "publish['x']"),
        ([80], "publish"),
    ],
)
def test_bad_publish(publish: object, option: str) -> None:
    with pytest.raises(ConfigError) as e:
        options.check("bridge", publish, None)
    assert e.value.option == option


def test_bad_network_values() -> None:
    for bad in ("host", 3, Network):
        with pytest.raises(ConfigError, match=r"^network:"):
            options.check(bad, None, None)
    with pytest.raises(ConfigError, match=r"^egress:"):
        options.check("bridge", None, "10.0.0.0/8")
    with pytest.raises(ConfigError, match=r"^Network.subnet"):
        Network("n", subnet="fd00::/64")
    with pytest.raises(ConfigError, match=r"too small"):
        Network("n", subnet="10.0.0.0/31")


def test_bridge_names_fit_ifnamsiz() -> None:
    assert Network("web").bridge == "sbx-web"
    long = Network("a-rather-long-network-name").bridge
    assert long.startswith("sbx-") and len(long) <= 15
    assert Network("a.b").bridge != "sbx-a.b"


def test_hosts_file_slots_are_rewritten_in_place(tmp_path: Path) -> None:
    path = str(tmp_path / "hosts")
    net = ipaddress.IPv4Network("10.231.5.0/24")
    hosts.create(path)
    ino = Path(path).stat().st_ino
    hosts.set_slot(path, net, "10.231.5.4", "c")  # slots 1-3 become comments, not NULs
    hosts.set_slot(path, net, "10.231.5.2", "a")
    data = Path(path).read_bytes()
    assert b"\0" not in data and len(data) == 5 * hosts.LINE
    names = [ln.split() for ln in data.decode().splitlines() if ln.strip() and not ln.startswith("#")]
    assert names[-2:] == [["10.231.5.2", "a"], ["10.231.5.4", "c"]]
    hosts.set_slot(path, net, "10.231.5.2", None)
    text = Path(path).read_text()
    assert "\ta" not in text and "10.231.5.4\tc" in text
    assert Path(path).stat().st_ino == ino and len(text) == 5 * hosts.LINE


def test_elements_follow_networks_and_live_leases() -> None:
    recs = [
        Record("a", "10.1.0.0/24", "sbx-a", False, False),
        Record("i", "10.2.0.0/24", "sbx-i", True, False),
    ]
    lease = Lease("10.1.0.2", 1, 1, "sbxv-1", "h", [("tcp", 8080, 80)], ["10.3.0.0/16"])
    el = nft.elements(recs, [lease])
    assert el["bridges"] == ["sbx-a", "sbx-i"]
    assert el["internal"] == ["sbx-i"]
    assert el["nat_nets"] == [{"range": ["10.1.0.0", "10.1.0.255"]}]
    assert el["pub_tcp"] == [[8080, "10.1.0.2"]] and el["pub_tcp_port"] == [[8080, 80]]
    assert el["restricted"] == ["10.1.0.2"]
    assert el["egress"] == [{"concat": ["10.1.0.2", {"range": ["10.3.0.0", "10.3.255.255"]}]}]
    assert el["rport_ip"] == [{"concat": ["sbxv-1", "10.1.0.2"]}]


def test_a_network_named_like_a_file_of_the_state_dir_is_refused() -> None:
    # its dir took the place of the saved ip_forward (state.py): the host's
    # old value was then never saved, nor put back
    for name in (options.FORWARD_SAVED, options.FORWARD_SAVED + ".tmp123"):
        with pytest.raises(ConfigError, match=r"^Network.name: .* is reserved"):
            Network(name)
    assert Network("ip_forward").name == "ip_forward"


def test_subnets_are_kept_in_canonical_cidr_form() -> None:
    """Found in review: a subnet given with a netmask was kept as written, a
    string other than the same subnet's CIDR (the existing network's record
    then "conflicted" with it)."""
    for form in ("10.88.0.0/255.255.255.0", "10.88.0.0/0.0.0.255", "10.88.0.0/24"):
        assert Network("n", subnet=form).subnet == "10.88.0.0/24"
    assert Network("n", subnet="10.88.0.0/255.255.255.0") == Network("n", subnet="10.88.0.0/24")
    o = options.check(Network("n", subnet="10.88.0.0/255.255.0.0"), None, None)
    assert o is not None and o.network.subnet == "10.88.0.0/16"
    with pytest.raises(
        ConfigError, match=r"^Network.subnet: '10.88.0.1/24': .*host bits set; write it as '10.88.0.0/24'"
    ):
        Network("n", subnet="10.88.0.1/24")
    with pytest.raises(ConfigError, match=r"^Network.subnet: '10.88.0.0/255.0.255.0'"):
        Network("n", subnet="10.88.0.0/255.0.255.0")


def test_a_record_with_a_netmask_reads_as_cidr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sandbox.network import state

    monkeypatch.setattr(state, "ROOT", str(tmp_path))
    (tmp_path / "n").mkdir()
    (tmp_path / "n" / "network.json").write_text(
        '{"name": "n", "subnet": "10.88.0.0/255.255.255.0", "bridge": "sbx-n", '
        '"internal": false, "persistent": true}'
    )
    rec = state.read_record("n")
    assert rec is not None and rec.subnet == "10.88.0.0/24"


def test_a_sweep_that_empties_a_network_compacts_its_hosts_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no lease left, no sandbox has the file mounted: it goes back to
    the header (it only grew before).  A dead owner's lease with no veth
    and no rules: the sweep touches files only."""
    from sandbox.network import lifecycle, state

    monkeypatch.setattr(state, "ROOT", str(tmp_path))
    rec = Record("n", "10.88.0.0/24", "sbx-n", True, True)
    state.write_record(rec)
    path = str(tmp_path / "n" / "hosts")
    hosts.create(path)
    dead = Lease("10.88.0.9", 0, -1, "", "h")
    assert state.take_lease("n", dead)
    hosts.set_slot(path, rec.net, dead.ip, "h")
    assert Path(path).stat().st_size == 10 * hosts.LINE
    assert lifecycle._sweep(rec) == ["lease n/10.88.0.9 (pid 0)"]
    assert Path(path).stat().st_size == hosts.LINE and state.lease_ips("n") == set()
