"""Spec validation: every bad option gets a ConfigError that names it
(`.option`, and the message starts with "option: "), before anything is
created.  Nothing here starts a sandbox."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sandbox import ConfigError, IdMap, Mount, Sandbox
from sandbox.spec import check_abs_path, check_argv, check_env, make_spec

IDMAP = IdMap(100000)


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    """A tiny rootfs tree (no binaries: validation only looks at paths)."""
    r = tmp_path / "rootfs"
    for d in ("bin", "etc", "tmp", "data", "real"):
        (r / d).mkdir(parents=True)
    (r / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (r / "abs-link").symlink_to("/etc")
    (r / "rel-link").symlink_to("../../../../../../..")
    (r / "real" / "inner-link").symlink_to("/tmp")
    (r / "dangling").symlink_to("/nonexistent/target")
    return r


@pytest.fixture
def src(tmp_path: Path) -> Path:
    s = tmp_path / "src"
    s.mkdir()
    return s


def spec(rootfs: Path, **kw: object) -> object:
    kw.setdefault("idmap", IDMAP)
    return make_spec(rootfs=rootfs, **kw)


def raises_option(option: str, fn, *args: object, match: str | None = None, **kw: object) -> ConfigError:
    with pytest.raises(ConfigError) as e:
        fn(*args, **kw)
    assert e.value.option == option, str(e.value)
    assert str(e.value).startswith(f"{option}: "), str(e.value)
    if match is not None:
        assert match in str(e.value)
    return e.value


# -- rootfs and layers ------------------------------------------------------------------


def test_a_repointed_or_moved_rootfs_path_resolves_again(tmp_path: Path) -> None:
    """The real path of a rootfs is kept between sandboxes, only while both
    paths still lead to the same directory."""
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        (d / "etc").mkdir(parents=True)
    link = tmp_path / "link"
    link.symlink_to(a)
    assert make_spec(rootfs=link, idmap=IDMAP).layers == (str(a),)
    assert make_spec(rootfs=link, idmap=IDMAP).layers == (str(a),)  # kept
    link.unlink()
    link.symlink_to(b)
    assert make_spec(rootfs=link, idmap=IDMAP).layers == (str(b),)  # re-pointed
    moved = tmp_path / "b-moved"
    b.rename(moved)
    b.mkdir()  # another directory where the real path was
    link.unlink()
    link.symlink_to(moved)
    assert make_spec(rootfs=link, idmap=IDMAP).layers == (str(moved),)
    # a path without symlinks, kept, then replaced by a symlink to elsewhere
    c = tmp_path / "c"
    (c / "etc").mkdir(parents=True)
    assert make_spec(rootfs=c, idmap=IDMAP).layers == (str(c),)
    assert make_spec(rootfs=c, idmap=IDMAP).layers == (str(c),)  # kept
    c.rename(tmp_path / "c-old")
    c.symlink_to(a)
    assert make_spec(rootfs=c, idmap=IDMAP).layers == (str(a),)


def test_valid_spec_is_normalised(rootfs: Path, src: Path, tmp_path: Path) -> None:
    link = tmp_path / "rootfs-link"
    link.symlink_to(rootfs)
    s = make_spec(
        rootfs=link,
        workdir="//data/./",
        mounts=[Mount(src, "/mnt//x/")],
        idmap=IDMAP,
        env={"A": "1"},
        hostname="judge-1",
        disk="64M",
    )
    assert s.layers == (str(rootfs),)  # the symlink resolved on the host, once
    assert s.workdir == "/data"
    assert s.mounts == (Mount(str(src), "/mnt/x", True),)
    assert s.env == (("A", "1"),)
    assert s.hostname == "judge-1"
    assert s.disk == 64 << 20


def test_mount_is_read_only_by_default(src: Path) -> None:
    assert Mount(src, "/x").read_only is True


def test_missing_rootfs(tmp_path: Path) -> None:
    raises_option("rootfs", make_spec, rootfs=tmp_path / "nonexistent", idmap=IDMAP, match="does not exist")


def test_rootfs_that_is_a_file(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    raises_option("rootfs", make_spec, rootfs=f, idmap=IDMAP)


@pytest.mark.parametrize("rel", ["rootfs", "./rootfs", "../x", Path("rootfs")])
def test_relative_rootfs(rel: object, rootfs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(rootfs.parent)  # exists relative to cwd: still refused
    raises_option("rootfs", make_spec, rootfs=rel, idmap=IDMAP, match="relative")


@pytest.mark.parametrize("bad", [123, b"/bytes/path", ["/x"]])
def test_rootfs_of_the_wrong_type(bad: object) -> None:
    raises_option("rootfs", make_spec, rootfs=bad, idmap=IDMAP)


def test_rootfs_and_layers_exclusive(rootfs: Path) -> None:
    raises_option("rootfs", make_spec, idmap=IDMAP)
    raises_option("rootfs", make_spec, rootfs=rootfs, layers=[rootfs], idmap=IDMAP)


@pytest.mark.parametrize("bad", [[], "dir", b"dir", 5, Path("/tmp")])
def test_layers_not_a_list(bad: object) -> None:
    raises_option("layers", make_spec, layers=bad, idmap=IDMAP)


def test_layers_name_the_bad_index(rootfs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    raises_option("layers[1]", make_spec, layers=[rootfs, tmp_path / "missing"], idmap=IDMAP)
    raises_option("layers[2]", make_spec, layers=[rootfs, rootfs, "rootfs"], idmap=IDMAP, match="relative")


def test_too_many_layers(rootfs: Path) -> None:
    raises_option("layers", make_spec, layers=[rootfs] * 201, idmap=IDMAP)


# -- the other options --------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["tmp", "", "./x", "/a/../b", "/..", None, 5])
def test_workdir(bad: object, rootfs: Path) -> None:
    raises_option("workdir", spec, rootfs, workdir=bad)


@pytest.mark.parametrize("bad", ["", "a_b", "-a", "a-", "a" * 65, "a..b", "a b", "é", "x\0", None, 5])
def test_hostname(bad: object, rootfs: Path) -> None:
    raises_option("hostname", spec, rootfs, hostname=bad)


@pytest.mark.parametrize(
    "bad",
    [
        {"A=B": "x"},
        {"=": "x"},
        {"A\0B": "x"},
        {"": "x"},
        {1: "x"},
        {b"A": "x"},
        {"A": "x\0y"},
        {"A": 1},
        {"A": b"x"},
        {"A": None},
        [("A", "x")],
        "A=x",
    ],
)
def test_env(bad: object, rootfs: Path) -> None:
    raises_option("env", spec, rootfs, env=bad)


@pytest.mark.parametrize("bad", [True, 1.5, ["root"], b"root"])
def test_user_type(bad: object, rootfs: Path) -> None:
    raises_option("user", spec, rootfs, user=bad)


@pytest.mark.parametrize("bad", [1, "yes", None])
def test_read_only_must_be_bool(bad: object, rootfs: Path) -> None:
    raises_option("read_only", spec, rootfs, read_only=bad)


@pytest.mark.parametrize("bad", ["abc", "1K", 0, -1, True])
def test_disk(bad: object, rootfs: Path) -> None:
    raises_option("disk", spec, rootfs, disk=bad)


@pytest.mark.parametrize("bad", [IdMap(0), IdMap(-5), IdMap(100000, 0), IdMap(2**32 - 10), "100000", 100000])
def test_idmap(bad: object, rootfs: Path) -> None:
    raises_option("idmap", make_spec, rootfs=rootfs, idmap=bad)


def test_idmap_holding_the_callers_uid(rootfs: Path) -> None:
    me = os.geteuid()
    if me == 0:
        # Host root can only be in a range that starts at 0, which is refused.
        raises_option("idmap", make_spec, rootfs=rootfs, idmap=IdMap(0, 10))
    else:
        raises_option("idmap", make_spec, rootfs=rootfs, idmap=IdMap(max(1, me - 5), 10))


# -- mounts --------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["x", b"x", Mount("/tmp", "/x")])
def test_mounts_not_a_list(bad: object, rootfs: Path) -> None:
    raises_option("mounts", spec, rootfs, mounts=bad)


def test_mount_entry_of_the_wrong_type(rootfs: Path, src: Path) -> None:
    raises_option("mounts[1]", spec, rootfs, mounts=[Mount(src, "/a"), (str(src), "/b")])


def test_mount_src_relative(rootfs: Path, src: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(src.parent)
    raises_option("mounts[0].src", spec, rootfs, mounts=[Mount("src", "/a")])


def test_mount_src_missing(rootfs: Path, tmp_path: Path) -> None:
    raises_option(
        "mounts[0].src", spec, rootfs, mounts=[Mount(tmp_path / "missing", "/a")], match="does not exist"
    )


@pytest.mark.parametrize("dst", ["data", "", "./data", "/", "//", "/./"])
def test_mount_dst_relative_or_root(dst: str, rootfs: Path, src: Path) -> None:
    raises_option("mounts[0].dst", spec, rootfs, mounts=[Mount(src, dst)])


@pytest.mark.parametrize("dst", ["/..", "/../etc", "/data/../../etc", "/data/..", "/a/b/../../../../x"])
def test_mount_dst_escaping_with_dotdot(dst: str, rootfs: Path, src: Path) -> None:
    raises_option("mounts[0].dst", spec, rootfs, mounts=[Mount(src, dst)], match="'..'")


@pytest.mark.parametrize(
    "dst",
    [
        "/abs-link",
        "/abs-link/sub",
        "/abs-link/a/b/c",
        "/rel-link",
        "/rel-link/etc",
        "/real/inner-link",
        "/real/inner-link/x",
        "/dangling",
        "/dangling/x",
    ],
)
def test_mount_dst_through_a_symlink_of_the_rootfs(dst: str, rootfs: Path, src: Path) -> None:
    e = raises_option("mounts[0].dst", spec, rootfs, mounts=[Mount(src, dst)], match="symlink")
    assert "rootfs" in str(e)


def test_mount_dst_through_a_symlink_in_any_layer(rootfs: Path, src: Path, tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    (upper / "real").mkdir(parents=True)
    raises_option(
        "mounts[0].dst", make_spec, layers=[rootfs, upper], idmap=IDMAP, mounts=[Mount(src, "/abs-link/x")]
    )


def test_mount_dst_through_a_file_of_the_rootfs(rootfs: Path, src: Path) -> None:
    """/etc/passwd is a file: a destination below it can never be made.  The
    check that walks the destination in the rootfs must say so, not leak a
    raw NotADirectoryError from os.lstat."""
    raises_option("mounts[0].dst", spec, rootfs, mounts=[Mount(src, "/etc/passwd/x")])


def test_mount_index_is_named(rootfs: Path, src: Path) -> None:
    raises_option(
        "mounts[2].dst", spec, rootfs, mounts=[Mount(src, "/a"), Mount(src, "/b"), Mount(src, "/abs-link/c")]
    )


def test_mounts_normalised(rootfs: Path, src: Path) -> None:
    s = spec(rootfs, mounts=[Mount(src, "/new/dir", read_only=False), Mount(src, "/data")])
    assert [(m.dst, m.read_only) for m in s.mounts] == [("/new/dir", False), ("/data", True)]


# -- exec arguments --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        ([], "argv"),
        ((), "argv"),
        ("ls", "argv"),
        (b"ls", "argv"),
        (None, "argv"),
        (5, "argv"),
        ([""], "argv[0]"),
        ([b"ls"], "argv[0]"),
        (["ls", 1], "argv[1]"),
        (["ls", None], "argv[1]"),
        (["ls", "a\0b"], "argv[1]"),
        (["ls\0"], "argv[0]"),
        (["ls", b"-l"], "argv[1]"),
    ],
)
def test_argv(argv: object, option: str) -> None:
    raises_option(option, check_argv, argv)


def test_argv_valid() -> None:
    assert check_argv(("ls", "-l", "")) == ["ls", "-l", ""]


def test_env_valid() -> None:
    assert check_env("env", None) == []
    assert check_env("env", {"A": "", "B_2": "x=y"}) == [("A", ""), ("B_2", "x=y")]


@pytest.mark.parametrize("bad", ["rel", "", "/a/../b", None, 3])
def test_abs_path(bad: object) -> None:
    raises_option("cwd", check_abs_path, "cwd", bad)


def test_abs_path_normalised() -> None:
    assert check_abs_path("cwd", "//a/./b//") == "/a/b"
    assert check_abs_path("cwd", "/") == "/"


# -- the public constructor does the same ------------------------------------------------------


def test_sandbox_constructor_validates(rootfs: Path, src: Path, tmp_path: Path) -> None:
    raises_option("rootfs", Sandbox, tmp_path / "missing", idmap=IDMAP)
    raises_option("rootfs", Sandbox, "relative/dir", idmap=IDMAP)
    raises_option("mounts[0].dst", Sandbox, rootfs, mounts=[Mount(src, "/../x")], idmap=IDMAP)
    raises_option("mounts[0].dst", Sandbox, rootfs, mounts=[Mount(src, "/abs-link")], idmap=IDMAP)
    raises_option("env", Sandbox, rootfs, env={"A=B": "1"}, idmap=IDMAP)
    raises_option("env", Sandbox, rootfs, env={"A\0": "1"}, idmap=IDMAP)
    sb = Sandbox(rootfs, idmap=IDMAP)  # valid: constructing starts nothing
    assert sb.pid is None
    assert "created" in repr(sb)


def test_config_error_is_a_value_error(rootfs: Path) -> None:
    with pytest.raises(ValueError):
        make_spec(rootfs="relative", idmap=IDMAP)


def test_the_built_in_profile_names_agree_with_seccomp() -> None:
    from sandbox import seccomp, spec

    assert spec._BUILTIN_PROFILES == seccomp.BUILTIN


def test_options_given_again_give_the_kept_spec_only_while_the_rootfs_is_the_same(tmp_path: Path) -> None:
    a = tmp_path / "a"
    (a / "etc").mkdir(parents=True)
    s1 = make_spec(rootfs=str(a), idmap=IDMAP, hostname="h1")
    assert make_spec(rootfs=str(a), idmap=IDMAP, hostname="h1") is s1  # kept
    assert make_spec(rootfs=str(a), idmap=IDMAP, hostname="h2").hostname == "h2"
    with pytest.raises(ConfigError, match="read_only"):
        make_spec(rootfs=str(a), idmap=IDMAP, hostname="h1", read_only=1)  # 1 is not True
    a.rename(tmp_path / "gone")
    with pytest.raises(ConfigError, match="rootfs"):
        make_spec(rootfs=str(a), idmap=IDMAP, hostname="h1")  # looked at again
