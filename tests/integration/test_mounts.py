"""User bind mounts: read-only unless asked, destinations created when
missing, file mounts, and destinations through a symlink refused."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from sandbox import ConfigError, LaunchError, Mount, Sandbox
from tests import leakcheck
from tests.conftest import sh, sh_ok

pytestmark = pytest.mark.integration


@pytest.fixture
def data(host_dir: Path) -> Path:
    (host_dir / "hello.txt").write_text("from the host\n")
    (host_dir / "hello.txt").chmod(0o644)
    (host_dir / "sub").mkdir()
    (host_dir / "sub").chmod(0o755)
    return host_dir


def test_read_only_by_default(sandbox_host, busybox_rootfs, data: Path) -> None:
    # World-writable on the host: only the read-only mount stands in the way.
    for p in (data, data / "sub"):
        p.chmod(0o777)
    (data / "hello.txt").chmod(0o666)
    with Sandbox(rootfs=busybox_rootfs, mounts=[Mount(data, "/data")]) as sb:
        assert sh_ok(sb, "cat /data/hello.txt") == "from the host\n"
        assert sorted(sh_ok(sb, "ls /data").split()) == ["hello.txt", "sub"]
        for script in (
            "echo x > /data/new",
            "echo x >> /data/hello.txt",
            "rm /data/hello.txt",
            "mkdir /data/d",
            "touch /data/sub/t",
        ):
            r = sh(sb, script)
            assert r.exit_code != 0, script
            assert b"Read-only file system" in r.stderr, (script, r.stderr)
        assert "ro" in sh_ok(sb, "grep ' /data ' /proc/self/mountinfo").split()[5].split(",")
    assert sorted(os.listdir(data)) == ["hello.txt", "sub"]
    assert (data / "hello.txt").read_text() == "from the host\n"


def test_read_only_cannot_be_undone_inside(sandbox_host, busybox_rootfs, data: Path) -> None:
    with Sandbox(rootfs=busybox_rootfs, mounts=[Mount(data, "/data")]) as sb:
        sh(sb, "mount -o remount,rw,bind /data; mount -o remount,rw /data")
        r = sh(sb, "echo x > /data/new")
        assert r.exit_code != 0
    assert not (data / "new").exists()


def test_writable_when_asked(sandbox_host, busybox_rootfs, data: Path) -> None:
    data.chmod(0o777)  # the sandbox writes as its unprivileged host uid
    with Sandbox(rootfs=busybox_rootfs, mounts=[Mount(data, "/data", read_only=False)]) as sb:
        sh_ok(sb, "echo written inside > /data/new.txt")
        sb.files.write_bytes("/data/via-files", b"ok")
        host_uid = int(sh_ok(sb, "cat /proc/self/uid_map").split()[1])
    assert (data / "new.txt").read_text() == "written inside\n"
    assert (data / "via-files").read_bytes() == b"ok"
    st = os.stat(data / "new.txt")
    assert st.st_uid == host_uid and st.st_uid != 0  # written as the mapped uid, not host root


def test_destination_is_created(sandbox_host, busybox_rootfs, data: Path) -> None:
    with Sandbox(rootfs=busybox_rootfs, mounts=[Mount(data, "/new/deep/dir")]) as sb:
        assert sh_ok(sb, "cat /new/deep/dir/hello.txt") == "from the host\n"
    assert not (busybox_rootfs / "new").exists()  # made in the writable layer only


def test_file_mount(sandbox_host, busybox_rootfs, data: Path) -> None:
    f = data / "hello.txt"
    with Sandbox(rootfs=busybox_rootfs, mounts=[Mount(f, "/etc/greeting"), Mount(f, "/opt/new/file")]) as sb:
        assert sh_ok(sb, "cat /etc/greeting /opt/new/file") == "from the host\n" * 2
        assert sh(sb, "echo x > /etc/greeting").exit_code != 0
    assert f.read_text() == "from the host\n"


def test_file_mount_over_an_existing_file(sandbox_host, busybox_rootfs, data: Path) -> None:
    with Sandbox(rootfs=busybox_rootfs, mounts=[Mount(data / "hello.txt", "/etc/passwd")]) as sb:
        assert sh_ok(sb, "cat /etc/passwd") == "from the host\n"
    assert "root:x:0:0" in (busybox_rootfs / "etc" / "passwd").read_text()


def test_a_mount_source_that_changed_kind_gets_the_right_mount_point(
    sandbox_host, busybox_rootfs, tmp_path
) -> None:
    """The same options again, with the source now a file where it was a
    directory (and back): its mount point is made for what it is now (the
    plan cached per options had kept the first answer: EINVAL)."""
    src = tmp_path / "src"
    for kind in ("dir", "file", "dir"):
        if src.is_dir():
            (src / "f").unlink()
            src.rmdir()
        elif src.exists():
            src.unlink()
        if kind == "dir":
            src.mkdir()
            (src / "f").write_text("in a dir\n")
        else:
            src.write_text("a file\n")
        with Sandbox(rootfs=busybox_rootfs, mounts=[Mount(src, "/data")], warm=False) as sb:
            want = "in a dir\n" if kind == "dir" else "a file\n"
            assert sh_ok(sb, "cat /data/f" if kind == "dir" else "cat /data") == want


def test_several_mounts(sandbox_host, busybox_rootfs, data: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    other.chmod(0o755)
    (other / "o").write_text("other")
    (other / "o").chmod(0o644)
    with Sandbox(rootfs=busybox_rootfs, mounts=[Mount(data, "/a"), Mount(other, "/a/sub")]) as sb:
        assert sh_ok(sb, "cat /a/hello.txt /a/sub/o") == "from the host\nother"


def test_destination_through_a_symlink_is_refused(
    sandbox_host, busybox_rootfs, copied_rootfs: Path, data: Path
) -> None:
    (copied_rootfs / "link").symlink_to("/etc")
    (copied_rootfs / "host-link").symlink_to(str(data.parent))
    for root, dst in (
        (busybox_rootfs, "/bin/sh"),
        (busybox_rootfs, "/bin/sh/x"),
        (copied_rootfs, "/link"),
        (copied_rootfs, "/link/x"),
        (copied_rootfs, "/host-link/y"),
    ):
        with pytest.raises(ConfigError) as e:
            Sandbox(rootfs=root, mounts=[Mount(data, dst)])
        assert e.value.option == "mounts[0].dst"
        assert "symlink" in str(e.value)


def test_destination_escaping_with_dotdot_is_refused(sandbox_host, busybox_rootfs, data: Path) -> None:
    for dst in ("/../../etc", "/data/../../x", "/.."):
        with pytest.raises(ConfigError) as e:
            Sandbox(rootfs=busybox_rootfs, mounts=[Mount(data, dst)])
        assert e.value.option == "mounts[0].dst"


def test_the_init_refuses_a_symlink_too(sandbox_host, copied_rootfs: Path, data: Path) -> None:
    """Defence in depth: a symlink that appears after validation (here
    swapped into the spec behind the validator's back) is refused by the
    init's own walk, and the failed start leaves nothing behind."""
    (copied_rootfs / "link").symlink_to("/etc")
    sb = Sandbox(rootfs=copied_rootfs, mounts=[Mount(data, "/okdir")])
    spec = sb._spec
    sb._spec = dataclasses.replace(spec, mounts=(dataclasses.replace(spec.mounts[0], dst="/link/x"),))
    before = leakcheck.snapshot()
    with pytest.raises(LaunchError) as e:
        sb.start()
    assert "/link/x" in str(e.value)
    assert leakcheck.leaks(before) == []
    assert not (copied_rootfs / "etc" / "x").exists()
