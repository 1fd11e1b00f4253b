"""A real distribution's binaries run: a Debian (mmdebstrap minbase) rootfs."""

from __future__ import annotations

import pytest

from sandbox import Sandbox
from tests.conftest import sh_ok

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def deb(debian_rootfs):
    from tests.conftest import require_sandbox_host

    require_sandbox_host()
    with Sandbox(rootfs=debian_rootfs) as sb:
        yield sb


def test_os_release(deb) -> None:
    text = deb.exec(["cat", "/etc/os-release"]).stdout_text
    assert "ID=debian" in text
    assert "bookworm" in text


def test_bin_true(deb) -> None:
    r = deb.exec(["/bin/true"])
    assert r.ok and r.stdout == b"" and r.stderr == b""
    assert deb.exec(["/bin/false"]).exit_code == 1


def test_apt_get_version(deb) -> None:
    r = deb.exec(["apt-get", "--version"])
    assert r.ok
    assert r.stdout_text.startswith("apt ")


def test_dpkg_list(deb) -> None:
    out = sh_ok(deb, "dpkg -l | head")
    assert "Desired=Unknown/Install/Remove/Purge/Hold" in out
    pkgs = sh_ok(deb, "dpkg-query -W -f '${Package}\\n'").split()
    assert {"bash", "coreutils", "dpkg", "apt", "libc6"} <= set(pkgs)


def test_bash_and_coreutils(deb) -> None:
    assert sh_ok(deb, "bash -c 'echo $BASH_VERSION'").startswith("5.")
    assert deb.exec(["id", "-un"]).stdout_text == "root\n"
    assert deb.exec(["id", "-un"], user="nobody").stdout_text == "nobody\n"
    assert deb.exec(["stat", "-c", "%U:%G", "/usr/bin/dpkg"]).stdout_text == "root:root\n"


def test_dynamic_linking_and_locale_free_env(deb) -> None:
    out = sh_ok(deb, "ldd /bin/ls | grep -c libc.so")
    assert int(out) >= 1
    assert "LANG" not in deb.exec(["env"]).stdout_text
