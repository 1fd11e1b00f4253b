"""The sandbox's own mounts (/tmp, /etc/hostname, /etc/hosts, the /proc
masks) onto what an image has at those paths: a symlink there leads no
mount out of the root,
and a file where a directory belongs (or the reverse) fails the start with
mount(2)'s ENOTDIR, naming the path, whatever call the init mounts with."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest

from sandbox import LaunchError, Sandbox, devices
from tests import leakcheck
from tests.conftest import sh_ok

pytestmark = pytest.mark.integration


def test_an_image_symlink_resolves_inside_the_root(sandbox_host, copied_rootfs: Path) -> None:
    # "/../../.." climbs no higher than the root; the same path on the host
    # does not exist, so the start succeeds only if it resolved inside.
    hosts = copied_rootfs / "etc" / "hosts"
    if hosts.exists() or hosts.is_symlink():
        hosts.unlink()
    (copied_rootfs / "etc" / "hosts-in-image").write_text("image\n")
    hosts.symlink_to("/../../../../etc/hosts-in-image")
    assert not os.path.lexists("/etc/hosts-in-image")
    with Sandbox(rootfs=copied_rootfs) as sb:
        assert "127.0.0.1\tlocalhost" in sh_ok(sb, "cat /etc/hosts")
        assert sh_ok(sb, "grep -c /etc/hosts-in-image /proc/self/mountinfo").strip() == "1"
    assert (copied_rootfs / "etc" / "hosts-in-image").read_text() == "image\n"


def test_an_image_dev_symlink_leads_no_mask_out_of_the_root(sandbox_host, copied_rootfs: Path) -> None:
    # /dev -> ../../(...)/<a host directory with a "null">: inside the root
    # the climb stops at /, and the image has that directory, where the
    # device template goes.  As a plain path from the staging directory, the
    # masks' /dev/null was the host's file.  (That directory is under /tmp,
    # which the sandbox's tmpfs covers after the pivot: hence no /dev/null
    # there, and stdin is a pipe.)
    host_dir = copied_rootfs.parent / "hostdir"
    host_dir.mkdir()
    (host_dir / "null").write_text("host file\n")
    shutil.rmtree(copied_rootfs / "dev")
    (copied_rootfs / str(host_dir).lstrip("/")).mkdir(parents=True)
    (copied_rootfs / "dev").symlink_to("../../../../../../../.." + str(host_dir))
    st = os.stat(os.path.join(devices.template(), "null"))  # an idmapped bind keeps dev and inode
    with Sandbox(rootfs=copied_rootfs) as sb:
        for mask in ("/proc/timer_list", "/proc/kallsyms"):
            out = sh_ok(sb, f"stat -c '%d %i' {mask}; cat {mask}", stdin=b"")
            assert out == f"{st.st_dev} {st.st_ino}\n", mask
    assert (host_dir / "null").read_text() == "host file\n"


@pytest.mark.parametrize(
    ("path", "image_has"),
    [("/tmp", "file"), ("/etc/hostname", "dir")],  # a directory, a file is bound there
)
def test_a_file_for_a_directory_fails_with_enotdir(
    sandbox_host, copied_rootfs: Path, path: str, image_has: str
) -> None:
    target = copied_rootfs / path.lstrip("/")
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)
    elif os.path.lexists(target):
        target.unlink()
    if image_has == "dir":
        target.mkdir()
    else:
        target.write_text("")
    before = leakcheck.snapshot()
    with pytest.raises(LaunchError) as e:
        Sandbox(rootfs=copied_rootfs).start()
    assert e.value.errno == errno.ENOTDIR
    assert f"({path})" in str(e.value) and "a file in the image" in str(e.value)
    assert leakcheck.leaks(before) == []
