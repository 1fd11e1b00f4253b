"""layers=[lowest, ..., top]: directories composed with overlayfs, the top
one shadowing the ones below; the host layers are never written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sandbox import Sandbox
from tests.conftest import sh, sh_ok

pytestmark = pytest.mark.integration


@pytest.fixture
def lower(tmp_path: Path) -> Path:
    d = tmp_path / "lower"
    (d / "etc").mkdir(parents=True)
    (d / "shadowed.txt").write_text("from lower\n")
    (d / "only-lower.txt").write_text("lower only\n")
    (d / "etc" / "motd").write_text("lower motd\n")
    (d / "dir").mkdir()
    (d / "dir" / "a").write_text("a from lower\n")
    return d


@pytest.fixture
def upper(tmp_path: Path) -> Path:
    d = tmp_path / "upper"
    (d / "etc").mkdir(parents=True)
    (d / "shadowed.txt").write_text("from upper\n")
    (d / "only-upper.txt").write_text("upper only\n")
    (d / "dir").mkdir()
    (d / "dir" / "b").write_text("b from upper\n")
    return d


def test_upper_layer_shadows_lower(sandbox_host, busybox_rootfs, lower: Path, upper: Path) -> None:
    with Sandbox(layers=[busybox_rootfs, lower, upper]) as sb:
        assert sh_ok(sb, "cat /shadowed.txt") == "from upper\n"
        assert (
            sh_ok(sb, "cat /only-lower.txt /only-upper.txt /etc/motd")
            == "lower only\nupper only\nlower motd\n"
        )
        assert sorted(sh_ok(sb, "ls /dir").split()) == ["a", "b"]  # directories merge
        assert "root:x:0:0" in sh_ok(sb, "cat /etc/passwd")  # from the busybox layer


def test_order_matters(sandbox_host, busybox_rootfs, lower: Path, upper: Path) -> None:
    with Sandbox(layers=[busybox_rootfs, upper, lower]) as sb:
        assert sh_ok(sb, "cat /shadowed.txt") == "from lower\n"


def test_layers_are_never_written(sandbox_host, busybox_rootfs, lower: Path, upper: Path) -> None:
    before = {p: sorted(os.listdir(p)) for p in (lower, upper)}
    with Sandbox(layers=[busybox_rootfs, lower, upper], cap_add=["CAP_CHOWN"]) as sb:
        sh_ok(
            sb,
            "echo changed > /shadowed.txt; echo changed > /only-lower.txt; rm /dir/a; "
            "echo new > /newfile; chown 1000 /only-upper.txt",
        )
        assert sh_ok(sb, "cat /shadowed.txt /only-lower.txt") == "changed\nchanged\n"
        assert sh(sb, "test -e /dir/a").exit_code != 0
    assert {p: sorted(os.listdir(p)) for p in (lower, upper)} == before
    assert (upper / "shadowed.txt").read_text() == "from upper\n"
    assert (lower / "only-lower.txt").read_text() == "lower only\n"
    assert (lower / "dir" / "a").exists()
    assert os.stat(upper / "only-upper.txt").st_uid == 0


def test_layer_ownership_shows_through(sandbox_host, busybox_rootfs, lower: Path) -> None:
    os.chown(lower / "only-lower.txt", 1000, 1000)
    with Sandbox(layers=[busybox_rootfs, lower]) as sb:
        assert sh_ok(sb, "stat -c '%u %g' /only-lower.txt /shadowed.txt").split("\n")[:2] == [
            "1000 1000",
            "0 0",
        ]


def test_read_only_layers(sandbox_host, busybox_rootfs, lower: Path, upper: Path) -> None:
    with Sandbox(layers=[busybox_rootfs, lower, upper], read_only=True) as sb:
        assert sh_ok(sb, "cat /shadowed.txt") == "from upper\n"
        r = sh(sb, "echo x > /newfile")
        assert r.exit_code != 0 and b"Read-only file system" in r.stderr


def test_many_layers(sandbox_host, busybox_rootfs, tmp_path: Path) -> None:
    layers = [busybox_rootfs]
    for i in range(40):
        d = tmp_path / f"l{i}"
        d.mkdir()
        (d / "which").write_text(f"{i}\n")
        (d / f"f{i}").write_text("x")
        layers.append(d)
    with Sandbox(layers=layers) as sb:
        assert sh_ok(sb, "cat /which") == "39\n"
        assert len(sh_ok(sb, "ls / | grep '^f[0-9]'").split()) == 40
