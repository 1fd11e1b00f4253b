"""Bad input to a running sandbox: a specific exception naming the option,
and the sandbox neither harmed nor left with anything behind (it keeps
serving; no process of a refused command exists)."""

from __future__ import annotations

import math

import pytest

from sandbox import CommandNotFound, ConfigError, Sandbox
from tests import leakcheck
from tests.conftest import fd_leaks, open_fds, sh_ok

pytestmark = pytest.mark.integration

BAD_EXEC = [
    # (argv, keyword arguments, the option the error must name)
    ([], {}, "argv"),
    ("ls", {}, "argv"),
    (None, {}, "argv"),
    ([""], {}, "argv[0]"),
    ([b"ls"], {}, "argv[0]"),
    (["ls", 3], {}, "argv[1]"),
    (["ls", "a\0b"], {}, "argv[1]"),
    (["true"], {"env": {"A=B": "x"}}, "env"),
    (["true"], {"env": {"A\0": "x"}}, "env"),
    (["true"], {"env": {"": "x"}}, "env"),
    (["true"], {"env": {"A": "x\0"}}, "env"),
    (["true"], {"env": {"A": 1}}, "env"),
    (["true"], {"timeout": 0}, "timeout"),
    (["true"], {"timeout": -1}, "timeout"),
    (["true"], {"timeout": -0.5}, "timeout"),
    (["true"], {"timeout": math.nan}, "timeout"),
    (["true"], {"timeout": math.inf}, "timeout"),
    (["true"], {"timeout": "1"}, "timeout"),
    (["true"], {"timeout": True}, "timeout"),
    (["true"], {"cwd": "relative"}, "cwd"),
    (["true"], {"cwd": "/a/../b"}, "cwd"),
    (["true"], {"user": True}, "user"),
    (["true"], {"user": 1.5}, "user"),
    (["true"], {"user": "a:b:c"}, "user"),
    (["true"], {"user": "nosuchuser"}, "user"),
]


@pytest.mark.parametrize(
    ("argv", "kw", "option"), BAD_EXEC, ids=[f"{o}-{i}" for i, (_, _, o) in enumerate(BAD_EXEC)]
)
def test_bad_exec_input(sb, argv: object, kw: dict, option: str) -> None:
    ns = leakcheck.proc_info(sb.pid).pidns
    before_members = {m.key for m in leakcheck.pidns_members(ns)}
    fds = open_fds()
    for call in (sb.exec, sb.spawn):
        with pytest.raises(ConfigError) as e:
            call(argv, **kw)
        assert e.value.option == option, str(e.value)
        assert str(e.value).startswith(f"{option}: ")
    assert {m.key for m in leakcheck.pidns_members(ns)} == before_members
    assert fd_leaks(fds) == {}
    assert sb.exec(["echo", "still fine"]).stdout == b"still fine\n"


def test_oversized_command_names_the_option(sb) -> None:
    with pytest.raises(ConfigError) as e:
        sb.exec(["echo", "x" * (512 * 1024)])
    assert e.value.option == "argv"
    assert sb.exec(["true"]).ok


def test_missing_binary_leaves_no_process(sb) -> None:
    ns = leakcheck.proc_info(sb.pid).pidns
    fds = open_fds()
    for _ in range(20):
        with pytest.raises(CommandNotFound) as e:
            sb.exec(["/bin/nosuch"])
        assert str(e.value).startswith("exec /bin/nosuch: No such file or directory (ENOENT)")
    assert [m.cmdline for m in leakcheck.pidns_members(ns)] == ["sandbox-init"]
    assert fd_leaks(fds) == {}
    # No zombie either: the init reaped the failed children.
    assert "Z" not in sh_ok(sb, "cat /proc/[0-9]*/stat | cut -d' ' -f3; true").split()


def test_bad_files_paths(sb) -> None:
    for bad in ("relative", "", "/a/../b"):
        with pytest.raises(ConfigError) as e:
            sb.files.write_bytes(bad, b"x")
        assert e.value.option == "path"


def test_bad_sandbox_options_start_nothing(sandbox_host, busybox_rootfs, tmp_path) -> None:
    before = leakcheck.snapshot()
    fds = open_fds()
    for kw, option in (
        ({"rootfs": tmp_path / "missing"}, "rootfs"),
        ({"rootfs": "relative/rootfs"}, "rootfs"),
        ({"rootfs": busybox_rootfs, "env": {"A=B": "1"}}, "env"),
        ({"rootfs": busybox_rootfs, "workdir": "tmp"}, "workdir"),
        ({"rootfs": busybox_rootfs, "hostname": "bad_name"}, "hostname"),
        ({"rootfs": busybox_rootfs, "disk": "lots"}, "disk"),
        ({"layers": []}, "layers"),
    ):
        with pytest.raises(ConfigError) as e, Sandbox(**kw):
            pass
        assert e.value.option == option
    assert leakcheck.leaks(before) == []
    assert fd_leaks(fds) == {}
