"""links.check_bridge_filtering against a temp dir posing as /sys and /proc:
an egress list is refused, not silently unenforced between peers, on a
host whose bridged traffic would not pass the inet hooks."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox import HostError
from sandbox.network import links


def _host(tmp_path: Path, bridge_opt: str | None, module: bool) -> tuple[str, str]:
    sysfs, procfs = tmp_path / "sys", tmp_path / "proc"
    br = sysfs / "class/net/sbx-t/bridge"
    br.mkdir(parents=True)
    if bridge_opt is not None:
        (br / "nf_call_iptables").write_text(bridge_opt + "\n")
    if module:
        d = procfs / "sys/net/bridge"
        d.mkdir(parents=True)
        (d / "bridge-nf-call-iptables").write_text("0\n")  # the global switch: ours does not need it
    else:
        procfs.mkdir()
    return str(sysfs), str(procfs)


def test_a_filtering_bridge_passes(tmp_path: Path) -> None:
    links.check_bridge_filtering("sbx-t", *_host(tmp_path, "1", True))


def test_without_the_br_netfilter_module_egress_is_refused_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(HostError, match=r"br_netfilter module is not loaded.*`modprobe br_netfilter`"):
        links.check_bridge_filtering("sbx-t", *_host(tmp_path, "1", False))


def test_a_kernel_without_bridge_netfilter_is_refused(tmp_path: Path) -> None:
    with pytest.raises(HostError, match=r"CONFIG_BRIDGE_NETFILTER"):
        links.check_bridge_filtering("sbx-t", *_host(tmp_path, None, True))


def test_a_bridge_of_ours_without_the_option_gets_it(tmp_path: Path) -> None:
    sysfs, procfs = _host(tmp_path, "0", True)
    links.check_bridge_filtering("sbx-t", sysfs, procfs)
    assert (Path(sysfs) / "class/net/sbx-t/bridge/nf_call_iptables").read_text() == "1"
