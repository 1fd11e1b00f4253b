"""read_only=True: the rootfs cannot be written; /tmp (a tmpfs) still can."""

from __future__ import annotations

import pytest

from sandbox import Sandbox
from tests.conftest import sh, sh_ok

pytestmark = pytest.mark.integration


@pytest.fixture
def ro(sandbox_host, busybox_rootfs):
    with Sandbox(rootfs=busybox_rootfs, read_only=True) as sb:
        yield sb


@pytest.mark.parametrize(
    "script",
    [
        "touch /newfile",
        "echo x >> /etc/passwd",
        "mkdir /root/d",
        "rm /bin/ls",
        "ln -s /x /etc/l",
        "chmod 777 /etc",
        "chown 1000 /etc/passwd",
    ],
)
def test_writes_to_the_rootfs_fail_with_erofs(ro, script: str) -> None:
    r = sh(ro, script)
    assert r.exit_code != 0, script
    assert b"Read-only file system" in r.stderr, (script, r.stderr)


def test_files_api_write_fails_with_erofs(ro) -> None:
    import errno

    from sandbox import FileOpError

    with pytest.raises(FileOpError) as e:
        ro.files.write_bytes("/etc/new", b"x")
    assert e.value.errno == errno.EROFS


def test_tmp_and_dev_shm_stay_writable(ro) -> None:
    assert sh_ok(ro, "echo ok > /tmp/f && cat /tmp/f") == "ok\n"
    assert sh_ok(ro, "echo ok > /dev/shm/f && cat /dev/shm/f") == "ok\n"
    ro.files.write_bytes("/tmp/via-files", b"y")
    assert ro.files.read_bytes("/tmp/via-files") == b"y"


def test_hostname_and_hosts_still_present(ro) -> None:
    assert sh_ok(ro, "cat /etc/hostname").strip() == "sandbox"
    assert "localhost" in sh_ok(ro, "cat /etc/hosts")
    assert sh(ro, "echo x > /etc/hostname").exit_code != 0


def test_programs_run(ro) -> None:
    assert sh_ok(ro, "echo hi | tr a-z A-Z") == "HI\n"


def test_root_mount_is_read_only(ro) -> None:
    line = [x for x in sh_ok(ro, "cat /proc/self/mountinfo").splitlines() if x.split()[4] == "/"]
    assert line and "ro" in line[-1].split()[5].split(","), line
