"""The minimal /dev, and the disk limit of the writable layer."""

from __future__ import annotations

import pytest

from sandbox import Sandbox
from tests.conftest import sh, sh_ok

pytestmark = pytest.mark.integration

MB = 1 << 20


def test_minimal_dev(sb) -> None:
    names = set(sh_ok(sb, "ls -A /dev").split())
    expected = {
        "null",
        "zero",
        "full",
        "random",
        "urandom",
        "tty",
        "pts",
        "ptmx",
        "shm",
        "fd",
        "stdin",
        "stdout",
        "stderr",
        "mqueue",
    }
    assert names == expected, names ^ expected
    assert set(sh_ok(sb, "ls -A /dev/pts").split()) == {"ptmx"}  # a fresh devpts instance


def test_devices_work(sb) -> None:
    assert sh_ok(sb, "head -c 100 /dev/zero | wc -c").strip() == "100"
    assert sh_ok(sb, "head -c 32 /dev/urandom | wc -c").strip() == "32"
    assert sh_ok(sb, "echo gone > /dev/null; cat /dev/null | wc -c").strip() == "0"
    r = sh(sb, "echo x > /dev/full")
    assert r.exit_code != 0 and b"No space left on device" in r.stderr


def test_no_host_devices(sb) -> None:
    for dev in ("/dev/sda", "/dev/vda", "/dev/mem", "/dev/kmsg", "/dev/console"):
        assert sh(sb, f"test -e {dev}").exit_code != 0, dev
    r = sh(sb, "mknod /tmp/mem c 1 1")
    assert r.exit_code != 0  # a user namespace cannot make device nodes


def test_writable_layer_is_limited_by_disk(sandbox_host, busybox_rootfs) -> None:
    with Sandbox(rootfs=busybox_rootfs, disk="8M") as sb:
        r = sh(sb, "dd if=/dev/zero of=/big bs=1M count=16")
        assert r.exit_code != 0 and b"No space left on device" in r.stderr
        r = sh(sb, "dd if=/dev/zero of=/tmp/big bs=1M count=16")
        assert r.exit_code != 0 and b"No space left on device" in r.stderr
        sh_ok(sb, "rm -f /big /tmp/big")
        assert sb.exec(["true"]).ok


def test_disk_limit_bounds_the_total_written(sandbox_host, busybox_rootfs) -> None:
    """disk= is one budget for what a sandbox may write (tmpfs is memory):
    the root's writable layer and /tmp each sized to the whole limit let a
    command store twice as much."""
    with Sandbox(rootfs=busybox_rootfs, disk="8M") as sb:
        sh(sb, "dd if=/dev/zero of=/big bs=1M count=7; dd if=/dev/zero of=/tmp/big bs=1M count=7")
        used_kb = sum(int(x.split()[0]) for x in sh_ok(sb, "du -sk /big /tmp/big").splitlines())
        assert used_kb * 1024 <= 8 * MB, f"{used_kb} KiB written with disk='8M'"
