"""Networking, for real: namespaces, veths, our bridges and nftables tables.
Every packet these tests send goes to an address of a namespace or bridge
the test made (or to 127.0.0.1), never anywhere else."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox import ConfigError, Mount, Network, Sandbox
from sandbox.network import DEFAULT_SUBNET, state
from tests import leakcheck
from tests.conftest import require, sh, sh_ok

pytestmark = pytest.mark.integration

WEB = "mkdir -p /tmp/w && echo hello-from-$(hostname) > /tmp/w/index.html && exec httpd -f -p 80 -h /tmp/w"
# a server is up once it answers itself (no sleeps: polling with a deadline)
GET = "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w {t} {addr} 80"
WAIT_UP = (
    "for i in $(seq 200); do " + GET.format(t=1, addr="127.0.0.1") + " >/dev/null 2>&1 && exit 0; "
    "usleep 50000; done; exit 1"
)


def fetch(sb: Sandbox, addr: str, t: int = 10) -> Any:
    """busybox nc as an HTTP client (busybox's wget crashes in this rootfs)."""
    return sh(sb, GET.format(t=t, addr=addr))


def body(r: Any) -> str:
    assert r.exit_code == 0, r
    return str(r.stdout_text.rpartition("\r\n\r\n")[2])


def _nft_ok() -> bool:
    r = subprocess.run(["nft", "list", "tables"], capture_output=True)
    return r.returncode == 0


@pytest.fixture
def net_host(sandbox_host: None) -> Iterator[None]:
    """A host that can do bridge networking, and a check that the test left
    no link, lease or rule of ours."""
    require(_nft_ok(), "no nft/libnftables (apt-get install nftables)")
    require(os.path.exists("/proc/sys/net/ipv4/conf/all/route_localnet"), "no IPv4 sysctls")
    before = leakcheck.snapshot()
    yield
    found = [x for x in leakcheck.leaks(before) if x.split(":")[0] in ("link", "net", "nft")]
    assert found == []


@pytest.fixture(scope="module")
def files_only(tmp_path_factory: pytest.TempPathFactory) -> list[Mount]:
    """busybox's static glibc has no /etc/nsswitch.conf in its rootfs, and
    glibc's default then asks DNS before /etc/hosts: a lookup would go to the
    host's name server.  Tests resolve from files only, and the networks
    that use names are internal (no way out of the host) besides."""
    d = tmp_path_factory.mktemp("nss")
    (d / "nsswitch.conf").write_text("hosts: files\n")
    (d / "nsswitch.conf").chmod(0o644)
    return [Mount(str(d / "nsswitch.conf"), "/etc/nsswitch.conf")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ip(sb: Sandbox) -> str:
    out = sh_ok(sb, "ip -o -4 addr show eth0")
    return out.split()[3].split("/")[0]


def _serve(sb: Sandbox) -> Any:
    p = sb.spawn(["sh", "-c", WEB])
    sh_ok(sb, WAIT_UP, timeout=30)
    return p


def _fetch_host(addr: str, port: int) -> bytes:
    with socket.create_connection((addr, port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    return data


@contextlib.contextmanager
def _host_listener(addr: str) -> Iterator[int]:
    """A TCP listener of the host on `addr` (one of its own addresses)."""
    s = socket.socket()
    s.bind((addr, 0))
    s.listen(8)
    try:
        yield int(s.getsockname()[1])
    finally:
        s.close()


# -- none ----------------------------------------------------------------------


def test_none_has_only_loopback_and_reaches_no_host_address(net_host: None, busybox_rootfs: Path) -> None:
    gateway = str(ipaddress.IPv4Network(DEFAULT_SUBNET).network_address + 1)
    # a bridge sandbox makes the host's bridge address exist while we try it
    with Sandbox(rootfs=busybox_rootfs, network="bridge") as peer, Sandbox(rootfs=busybox_rootfs) as sb:
        assert _ip(peer) != ""
        links = sh_ok(sb, "ip -o link").splitlines()
        assert [ln.split(":")[1].strip() for ln in links] == ["lo"]
        assert "UP" in links[0]
        with _host_listener("127.0.0.1") as port, _host_listener(gateway) as gport:
            # the host answers on both
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
            socket.create_connection((gateway, gport), timeout=5).close()
            r1 = sh(sb, f"nc -w 2 127.0.0.1 {port} -e /bin/true")
            r2 = sh(sb, f"nc -w 2 {gateway} {gport} -e /bin/true")
        assert r1.exit_code != 0, r1
        assert r2.exit_code != 0 and b"unreachable" in r2.stderr.lower(), r2


# -- bridge ----------------------------------------------------------------------


def test_bridge_sandbox_has_address_route_mtu_hosts_and_resolv(net_host: None, busybox_rootfs: Path) -> None:
    with Sandbox(rootfs=busybox_rootfs, network="bridge", hostname="web1") as sb:
        ip = _ip(sb)
        assert ipaddress.IPv4Address(ip) in ipaddress.IPv4Network(DEFAULT_SUBNET)
        gw = str(ipaddress.IPv4Network(DEFAULT_SUBNET).network_address + 1)
        assert sh_ok(sb, "ip route").splitlines()[0].split()[:3] == ["default", "via", gw]
        uplink = subprocess.run(["ip", "-o", "route", "show", "default"], capture_output=True, text=True)
        dev = uplink.stdout.split(" dev ")[1].split()[0] if " dev " in uplink.stdout else None
        if dev:
            mtu = Path(f"/sys/class/net/{dev}/mtu").read_text().strip()
            assert f"mtu {mtu}" in sh_ok(sb, "ip -o link show eth0")
        assert f"{ip}\tweb1" in sh_ok(sb, "cat /etc/hosts")
        resolv = sh_ok(sb, "cat /etc/resolv.conf")
        assert "127.0.0." not in resolv  # the host's loopback resolver is not the sandbox's
        # the default bridge is Docker's: the host's bridge answers, peers are not named
        with _host_listener(gw) as port:
            sh_ok(sb, f"nc -w 5 {gw} {port} -e /bin/true")


def test_two_sandboxes_on_a_network_talk_tcp_by_name(
    net_host: None, busybox_rootfs: Path, debian_rootfs: Path, files_only: list[Mount]
) -> None:
    net = Network("t-names", internal=True)
    with Sandbox(rootfs=busybox_rootfs, network=net, hostname="server", mounts=files_only) as srv:
        p = _serve(srv)
        # the client joins later: the server's file shows it too
        with Sandbox(rootfs=busybox_rootfs, network=net, hostname="client", mounts=files_only) as cli:
            assert body(fetch(cli, "server")) == "hello-from-server\n"
            # glibc (dynamic, nss_files) in a Debian peer resolves both names
            with Sandbox(rootfs=debian_rootfs, network=net, hostname="deb") as deb:
                assert sh_ok(deb, "getent hosts server").split()[0] == _ip(srv)
                assert sh_ok(deb, "getent hosts client").split()[0] == _ip(cli)
                assert (
                    sh_ok(deb, "getent hosts deb").split()[0]
                    == sh_ok(deb, "grep -w deb /etc/hosts").split()[0]
                )
        # gone from the file when they leave
        hosts = sh_ok(srv, "cat /etc/hosts")
        assert "client" not in hosts and "deb" not in hosts and "\tserver" in hosts
        p.kill()
        p.wait()


def test_published_port_answers_at_loopback_and_bridge_address(net_host: None, busybox_rootfs: Path) -> None:
    port = _free_port()
    with Sandbox(rootfs=busybox_rootfs, network="bridge", publish={port: 80}, hostname="pub") as sb:
        p = _serve(sb)
        gw = str(ipaddress.IPv4Network(DEFAULT_SUBNET).network_address + 1)
        for addr in ("127.0.0.1", gw):
            assert b"hello-from-pub" in _fetch_host(addr, port), addr
        # the host port is held while the sandbox lives
        with pytest.raises(ConfigError, match="in use"):
            Sandbox(rootfs=busybox_rootfs, network="bridge", publish={port: 80}).start()
        p.kill()
        p.wait()
    with pytest.raises(OSError):
        _fetch_host("127.0.0.1", port)  # nothing there any more


def test_networks_are_isolated(net_host: None, busybox_rootfs: Path) -> None:
    with (
        Sandbox(rootfs=busybox_rootfs, network=Network("t-iso-a"), hostname="a") as a,
        Sandbox(rootfs=busybox_rootfs, network=Network("t-iso-b", internal=True), hostname="b") as b,
        Sandbox(rootfs=busybox_rootfs, network=Network("t-iso-b", internal=True), hostname="b2") as b2,
    ):
        p = _serve(b)
        target = _ip(b)
        assert body(fetch(b2, target)) == "hello-from-b\n"  # same network
        r = fetch(a, target, 3)
        assert r.exit_code != 0, r
        p.kill()
        p.wait()


def test_egress_allow_list_blocks_what_it_does_not_list(net_host: None, busybox_rootfs: Path) -> None:
    net = Network("t-egress", internal=True)
    with (
        Sandbox(rootfs=busybox_rootfs, network=net, hostname="s1") as s1,
        Sandbox(rootfs=busybox_rootfs, network=net, hostname="s2") as s2,
    ):
        p1, p2 = _serve(s1), _serve(s2)
        ip1, ip2 = _ip(s1), _ip(s2)
        with Sandbox(rootfs=busybox_rootfs, network=net, egress=[f"{ip1}/32"]) as limited:
            assert body(fetch(limited, ip1)) == "hello-from-s1\n"
            r = fetch(limited, ip2, 3)
            assert r.exit_code != 0, r
            gw = sh_ok(limited, "ip route").split()[2]
            with _host_listener(gw) as port:
                r = sh(limited, f"nc -w 3 {gw} {port} -e /bin/true")
            assert r.exit_code != 0, r  # the host is not listed either
            # nor step around it by taking another address: its network
            # namespace belongs to the host's user namespace, so even
            # CAP_NET_ADMIN inside cannot change it (nft's anti-spoofing
            # rules stand behind that)
            with Sandbox(rootfs=busybox_rootfs, network=net, egress=[], cap_add=["NET_ADMIN"]) as sneaky:
                free = str(ipaddress.IPv4Address(ip2) + 50)
                r = sh(sneaky, f"ip addr add {free}/{net_prefix(s1)} dev eth0")
                assert r.exit_code != 0 and b"not permitted" in r.stderr, r
        with Sandbox(rootfs=busybox_rootfs, network=net, egress=[]) as none_allowed:
            r = fetch(none_allowed, ip1, 3)
            assert r.exit_code != 0, r
        # unlisted sandboxes are not limited
        assert body(fetch(s2, ip1)) == "hello-from-s1\n"
        for p in (p1, p2):
            p.kill()
            p.wait()


def test_bridged_traffic_is_filtered_here(net_host: None, busybox_rootfs: Path) -> None:
    """Egress lists between peers of one bridge hold only with br_netfilter
    (links.check_bridge_filtering): this kernel has it, and our bridge
    filters."""
    from sandbox.network import links

    net = Network("t-brnf", internal=True)
    with Sandbox(rootfs=busybox_rootfs, network=net, egress=[]) as sb:
        sh_ok(sb, "true")
        assert Path(f"/sys/class/net/{net.bridge}/bridge/nf_call_iptables").read_text() == "1\n"
        links.check_bridge_filtering(net.bridge)


def test_egress_is_refused_where_bridged_traffic_would_pass_unfiltered(
    net_host: None, busybox_rootfs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found in review: without the br_netfilter module the bridge's
    nf_call_iptables does nothing, and a sandbox with an egress list reached
    its peers freely.  Posed here by a /proc without the module's sysctls."""
    from sandbox import HostError
    from sandbox.network import links

    (tmp_path / "proc").mkdir()
    monkeypatch.setattr(links, "PROCFS", str(tmp_path / "proc"), raising=False)
    net = Network("t-nobrnf", internal=True)
    with (
        pytest.raises(HostError, match=r"`modprobe br_netfilter`"),
        Sandbox(rootfs=busybox_rootfs, network=net, egress=[]),
    ):
        pass
    assert state.read_record("t-nobrnf") is None  # nothing left: the lease and the network went
    with Sandbox(rootfs=busybox_rootfs, network=net) as sb:  # no egress list: no need
        sh_ok(sb, "true")


def net_prefix(sb: Sandbox) -> str:
    return sh_ok(sb, "ip -o -4 addr show eth0").split()[3].split("/")[1]


_OTHER_HOME = """
import sys
from sandbox import Network, Sandbox
with Sandbox(rootfs=sys.argv[1], network=Network("t-home-b", internal=True)) as sb:
    assert sb.exec(["true"]).exit_code == 0
"""


def test_a_process_with_another_sandbox_home_leaves_our_rules(
    net_host: None, busybox_rootfs: Path, tmp_path: Path
) -> None:
    """Found in review: the network state lived under $SANDBOX_HOME, but our
    nftables tables and bridges are the host's.  A process with another home
    rewrote the sets from its own leases only, then removed the tables with
    its last network: our egress list was gone while our sandbox ran."""
    net = Network("t-home-a", internal=True)
    with (
        Sandbox(rootfs=busybox_rootfs, network=net, hostname="s1") as s1,
        Sandbox(rootfs=busybox_rootfs, network=net, egress=[]) as limited,
    ):
        p = _serve(s1)
        ip1 = _ip(s1)
        assert fetch(limited, ip1, 3).exit_code != 0
        env = dict(os.environ, SANDBOX_HOME=str(tmp_path / "home"))
        r = subprocess.run(
            [sys.executable, "-c", _OTHER_HOME, str(busybox_rootfs)],
            env=env,
            cwd=Path(__file__).resolve().parents[2],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 0, r
        # its network came and went; ours and its rules are still there
        assert state.read_record("t-home-b") is None and state.read_record("t-home-a") is not None
        r = fetch(limited, ip1, 3)
        assert r.exit_code != 0, r
        p.kill()
        p.wait()


def test_persistent_network_stays_until_gc(net_host: None, busybox_rootfs: Path) -> None:
    from sandbox import network
    from sandbox.network import hosts

    net = Network("t-keep", persistent=True)
    hosts_file = Path(state.net_dir("t-keep")) / "hosts"
    with Sandbox(rootfs=busybox_rootfs, network=net, hostname="k") as sb:
        sh_ok(sb, "true")
        assert hosts_file.stat().st_size >= 3 * hosts.LINE  # up to its slot (.2 or later)
    assert state.read_record("t-keep") is not None
    # found in review: the file never shrank; with no sandbox on the
    # network, nobody has it mounted, and it goes back to the header
    assert hosts_file.stat().st_size == hosts.LINE and "\tk" not in hosts_file.read_text()
    assert "sbx-t-keep" in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert not any("t-keep" in x for x in network.gc())
    removed = network.gc(networks=True)
    assert "network t-keep (bridge sbx-t-keep)" in removed
    assert state.read_record("t-keep") is None


def test_bad_network_options(sandbox_host: None, busybox_rootfs: Path) -> None:
    with pytest.raises(ConfigError, match=r"^network:"):
        Sandbox(rootfs=busybox_rootfs, network="host")
    with pytest.raises(ConfigError, match=r"^publish: needs a network"):
        Sandbox(rootfs=busybox_rootfs, publish={8080: 80})
    with pytest.raises(ConfigError, match=r"^egress: needs a network"):
        Sandbox(rootfs=busybox_rootfs, egress=[])
    with pytest.raises(ConfigError, match=r"^publish\[0\]"):
        Sandbox(rootfs=busybox_rootfs, network="bridge", publish={0: 80})
    with pytest.raises(ConfigError, match=r"^egress\[0\]"):
        Sandbox(rootfs=busybox_rootfs, network="bridge", egress=["nowhere"])
    with pytest.raises(ConfigError, match=r"^Network.subnet"):
        Network("x", subnet="10.0.0.1/24")
    with pytest.raises(ConfigError, match=r"^Network.name"):
        Network("Bad Name")
    with pytest.raises(ConfigError, match="internal"):
        Sandbox(rootfs=busybox_rootfs, network=Network("x", internal=True), publish={8080: 80})


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_async_sandboxes_on_a_network(
    net_host: None, busybox_rootfs: Path, files_only: list[Mount], backend: str
) -> None:
    """pyroute2's sync API fails under a running asyncio loop: the setup runs
    on the SDK's network thread, so AsyncSandbox works on both backends."""
    import anyio

    from sandbox import AsyncSandbox

    async def main() -> tuple[str, str]:
        net = Network("t-async", internal=True)
        async with (
            AsyncSandbox(rootfs=busybox_rootfs, network=net, hostname="a1", mounts=files_only) as a1,
            AsyncSandbox(rootfs=busybox_rootfs, network=net, hostname="a2", mounts=files_only) as a2,
        ):
            p = await a1.spawn(["sh", "-c", WEB])
            assert (await a1.exec(["sh", "-c", WAIT_UP], timeout=30)).exit_code == 0
            r = await a2.exec(["sh", "-c", GET.format(t=10, addr="a1")])
            await p.kill()
            await p.wait()
            return r.stdout_text, r.stderr_text

    out, err = anyio.run(main, backend=backend)
    assert out.endswith("hello-from-a1\n"), (out, err)


def test_ip_forward_is_on_while_a_nat_network_exists_and_restored_after(
    net_host: None, busybox_rootfs: Path
) -> None:
    before = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    with Sandbox(rootfs=busybox_rootfs, network=Network("t-fwd")):
        assert Path("/proc/sys/net/ipv4/ip_forward").read_text() == "1\n"
    if state.records() == []:  # no other network of ours holds it on
        assert Path("/proc/sys/net/ipv4/ip_forward").read_text() == before


def test_cli_run_on_the_default_network(net_host: None, busybox_rootfs: Path) -> None:
    import sys

    exe = os.path.join(os.path.dirname(sys.executable), "sandbox")
    port = _free_port()
    argv = [exe, "run", "--rootfs", str(busybox_rootfs), "--network", "bridge", "-p", f"{port}:80"]
    r = subprocess.run(
        [*argv, "--", "ip", "-o", "-4", "addr", "show", "eth0"], capture_output=True, text=True
    )
    assert r.returncode == 0, r
    addr = ipaddress.IPv4Address(r.stdout.split()[3].split("/")[0])
    assert addr in ipaddress.IPv4Network(DEFAULT_SUBNET)
    r = subprocess.run([*argv[:-2], "-p", "80", "--", "true"], capture_output=True, text=True)
    assert r.returncode == 125 and "--publish" in r.stderr, r
