"""sandbox.files: read, write, list, put, get, done through the sandbox
itself, so that symlinks in the rootfs or made inside can never redirect
a read or a write onto the host."""

from __future__ import annotations

import errno
import os
import tempfile
import uuid
from pathlib import Path

import pytest

from sandbox import FileOpError, Sandbox
from tests.conftest import sh, sh_ok

pytestmark = pytest.mark.integration


def test_write_then_read(sb) -> None:
    sb.files.write_bytes("/tmp/a.bin", b"\x00\x01binary\xff")
    assert sb.files.read_bytes("/tmp/a.bin") == b"\x00\x01binary\xff"
    assert sh_ok(sb, "od -An -tx1 /tmp/a.bin").split()[:2] == ["00", "01"]
    sb.files.write_text("/root/t.txt", "héllo\n")
    assert sb.files.read_text("/root/t.txt") == "héllo\n"
    assert sh_ok(sb, "cat /root/t.txt") == "héllo\n"


def test_write_truncates_and_sets_mode(sb) -> None:
    sb.files.write_bytes("/tmp/f", b"long content")
    sb.files.write_bytes("/tmp/f", b"x", mode=0o600)
    assert sb.files.read_bytes("/tmp/f") == b"x"
    sb.files.write_bytes("/tmp/g", b"", mode=0o750)
    assert sh_ok(sb, "stat -c %a /tmp/g").strip() == "750"


def test_large_file(sb) -> None:
    data = os.urandom(8 << 20)
    sb.files.write_bytes("/tmp/big", data)
    assert sh_ok(sb, "wc -c < /tmp/big").strip() == str(len(data))
    assert sb.files.read_bytes("/tmp/big") == data


def test_read_what_a_command_wrote(sb) -> None:
    sh_ok(sb, "mkdir -p /work/d && echo made-inside > /work/d/f")
    assert sb.files.read_text("/work/d/f") == "made-inside\n"
    assert sb.files.list("/work") == ["d"]
    assert sb.files.list("/work/d") == ["f"]
    assert sb.files.is_dir("/work/d") and not sb.files.is_dir("/work/d/f")
    assert not sb.files.is_dir("/nonexistent")


def test_read_errors(sb) -> None:
    with pytest.raises(FileOpError) as e:
        sb.files.read_bytes("/nonexistent")
    assert e.value.errno == errno.ENOENT
    assert isinstance(e.value, OSError)
    assert "/nonexistent" in str(e.value)
    assert sb.files.read_bytes("/nonexistent", missing_ok=True) is None
    with pytest.raises(FileOpError) as e:
        sb.files.read_bytes("/etc")
    assert e.value.errno == errno.EISDIR
    with pytest.raises(FileOpError) as e:
        sb.files.list("/etc/passwd")
    assert e.value.errno == errno.ENOTDIR


def test_special_files_are_refused(sb) -> None:
    sh_ok(sb, "mkfifo /tmp/fifo")
    with pytest.raises(FileOpError):
        sb.files.read_bytes("/tmp/fifo")  # must not hang the init
    with pytest.raises(FileOpError):
        sb.files.read_bytes("/dev/zero")  # endless
    assert sb.exec(["true"]).ok  # the init still serves


def test_relative_paths_are_refused(sb) -> None:
    from sandbox import ConfigError

    for bad in ("etc/passwd", "", "/etc/../etc/passwd"):
        with pytest.raises(ConfigError):
            sb.files.read_bytes(bad)
        with pytest.raises(ConfigError):
            sb.files.write_bytes(bad, b"x")


def test_mkdir(sb) -> None:
    sb.files.mkdir("/a/b/c", parents=True)
    assert sb.files.is_dir("/a/b/c")
    sb.files.mkdir("/a/b/c", exist_ok=True)
    with pytest.raises(FileOpError) as e:
        sb.files.mkdir("/a/b/c")
    assert e.value.errno == errno.EEXIST
    with pytest.raises(FileOpError) as e:
        sb.files.mkdir("/x/y")
    assert e.value.errno == errno.ENOENT


def test_put_and_get_trees(sb, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub" / "deeper").mkdir(parents=True)
    (src / "top.txt").write_text("top")
    (src / "sub" / "exe.sh").write_text("#!/bin/sh\necho run\n")
    (src / "sub" / "exe.sh").chmod(0o755)
    (src / "sub" / "deeper" / "bin").write_bytes(bytes(range(256)))
    sb.files.put(src, "/data/in")
    assert sh_ok(sb, "cat /data/in/top.txt") == "top"
    assert sh_ok(sb, "/data/in/sub/exe.sh") == "run\n"
    sh_ok(sb, "echo new > /data/in/sub/new.txt")
    out = tmp_path / "out"
    sb.files.get("/data/in", out)
    assert (out / "top.txt").read_text() == "top"
    assert (out / "sub" / "new.txt").read_text() == "new\n"
    assert (out / "sub" / "deeper" / "bin").read_bytes() == bytes(range(256))
    sb.files.put(src / "top.txt", "/single")
    sb.files.get("/single", tmp_path / "single")
    assert (tmp_path / "single").read_text() == "top"


# -- hostile symlinks -----------------------------------------------------------------


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A host directory a hostile symlink points at, writable by anyone:
    if a write got through to the host, no permission would stop it."""
    d = tmp_path / f"victim-{uuid.uuid4().hex[:8]}"
    d.mkdir()
    (d / "existing").write_text("host original")
    d.chmod(0o777)
    (d / "existing").chmod(0o666)
    for p in d.parents:  # traversable up to the system's tmp dir
        if p == Path(tempfile.gettempdir()) or p == Path("/"):
            break
        p.chmod(p.stat().st_mode | 0o011)
    return d


def _host_untouched(victim: Path) -> None:
    assert sorted(os.listdir(victim)) == ["existing"]
    assert (victim / "existing").read_text() == "host original"


def test_symlink_made_inside_cannot_redirect_a_write(sb, victim: Path) -> None:
    sh_ok(
        sb,
        f"ln -s {victim}/existing /tmp/file-link; ln -s {victim} /tmp/dir-link; "
        f"ln -s {victim}/new /tmp/new-link",
    )
    for path in ("/tmp/file-link", "/tmp/new-link", "/tmp/dir-link/existing", "/tmp/dir-link/new"):
        try:
            sb.files.write_bytes(path, b"PWNED")
        except FileOpError:
            pass
    _host_untouched(victim)


def test_write_does_not_follow_a_final_symlink(sb) -> None:
    sh_ok(sb, "echo inside > /tmp/target; ln -s /tmp/target /tmp/link")
    with pytest.raises(FileOpError) as e:
        sb.files.write_bytes("/tmp/link", b"x")
    assert e.value.errno == errno.ELOOP
    assert sh_ok(sb, "cat /tmp/target") == "inside\n"


def test_symlinks_planted_in_the_rootfs_resolve_inside(
    sandbox_host, copied_rootfs: Path, victim: Path
) -> None:
    """A hostile image: absolute and relative symlinks to host paths."""
    (copied_rootfs / "etc" / "evil-file").symlink_to(victim / "existing")
    (copied_rootfs / "evil-dir").symlink_to(victim)
    (copied_rootfs / "evil-up").symlink_to("../../../../../../../../.." + str(victim))
    (copied_rootfs / "evil-proc").symlink_to("/proc/1/root" + str(victim))
    with Sandbox(rootfs=copied_rootfs) as sb:
        for path in (
            "/etc/evil-file",
            "/evil-dir/existing",
            "/evil-dir/new",
            "/evil-up/existing",
            "/evil-up/new",
            "/evil-proc/new",
            "/evil-proc/existing",
        ):
            try:
                sb.files.write_bytes(path, b"PWNED")
            except FileOpError:
                pass
            try:
                got = sb.files.read_bytes(path, missing_ok=True) if not path.endswith("evil-file") else None
            except FileOpError:
                got = None  # refused (through /proc/1/root, a magic link: ELOOP)
            assert got in (None, b"PWNED"), path  # never the host's content
        with pytest.raises(FileOpError):
            sb.files.read_bytes("/evil-dir/existing")
        try:
            sb.files.mkdir("/evil-dir/made", parents=True)
        except FileOpError:
            pass
        # And a command writing through them stays inside too.
        sh(sb, "echo PWNED > /evil-dir/cmd; echo PWNED > /etc/evil-file; echo PWNED > /evil-up/cmd2")
    _host_untouched(victim)
    assert (copied_rootfs / "etc" / "evil-file").is_symlink()


def test_put_through_a_planted_symlink_stays_inside(
    sandbox_host, copied_rootfs: Path, victim: Path, tmp_path: Path
) -> None:
    (copied_rootfs / "drop").symlink_to(victim)
    src = tmp_path / "payload"
    src.mkdir()
    (src / "existing").write_text("PWNED")
    (src / "new").write_text("PWNED")
    with Sandbox(rootfs=copied_rootfs) as sb:
        try:
            sb.files.put(src, "/drop")
        except FileOpError:
            pass
    _host_untouched(victim)


def test_get_does_not_leak_host_files(sb, victim: Path, tmp_path: Path) -> None:
    sh_ok(sb, f"mkdir /out && echo ok > /out/f && ln -s {victim}/existing /out/hostlink")
    out = tmp_path / "out"
    try:
        sb.files.get("/out", out)
    except FileOpError:
        pass
    assert (out / "f").read_text() == "ok\n"
    for p in out.rglob("*"):
        if p.is_file():
            assert p.read_text(errors="replace") != "host original"


def test_get_copies_only_plain_files_and_directories(sb, tmp_path: Path) -> None:
    """files.get's contract: only plain files and directories are copied.
    A symlink in the tree (here a loop and a link to /etc/passwd) must not
    be followed: following it copies the loop 40 levels deep and copies
    whatever the link points at."""
    sh_ok(sb, "mkdir /out && echo ok > /out/f && ln -s . /out/loop && ln -s /etc/passwd /out/pw")
    out = tmp_path / "out"
    try:
        sb.files.get("/out", out)
    except FileOpError:
        pass
    assert (out / "f").read_text() == "ok\n"
    assert not (out / "loop").exists(), "get() followed a symlink loop"
    assert not (out / "pw").exists(), "get() copied a symlink's target"


def test_get_copies_sparse_files_linked_files_and_proc_files(sb, tmp_path: Path) -> None:
    # get() copies by data segments (SEEK_DATA): a hole stays a hole, a
    # second link a link; a file of /proc has no SEEK_DATA and is read
    # through, in order
    sh_ok(sb, "mkdir /out && echo hi > /out/a && ln /out/a /out/b && truncate -s 10M /out/sparse")
    sb.files.get("/out", tmp_path / "o")
    a, b, sparse = ((tmp_path / "o" / n).stat() for n in ("a", "b", "sparse"))
    assert (a.st_ino, a.st_nlink) == (b.st_ino, 2) and (tmp_path / "o" / "a").read_text() == "hi\n"
    assert sparse.st_size == 10 << 20 and sparse.st_blocks == 0
    sb.files.get("/proc/cpuinfo", tmp_path / "cpuinfo")
    assert "processor" in (tmp_path / "cpuinfo").read_text()


def test_a_failed_get_leaves_nothing_it_made(sb, tmp_path: Path) -> None:
    # the tree's last file is over max_size: FileOpError, and the files and
    # directories it had made (parents of the destination too) are gone; what
    # was at the destination before stays
    sh_ok(sb, "mkdir -p /out/a/b && echo x >/out/a/b/f && echo y >/out/a/g && head -c 5000 /dev/zero >/out/z")
    with pytest.raises(FileOpError) as e:
        sb.files.get("/out", tmp_path / "new" / "o", max_size=1000)
    assert e.value.errno == errno.EFBIG
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "there").mkdir()
    (tmp_path / "there" / "mine").write_text("kept")
    with pytest.raises(FileOpError):
        sb.files.get("/out", tmp_path / "there", max_size=1000)
    assert [p.name for p in (tmp_path / "there").iterdir()] == ["mine"]
    assert (tmp_path / "there" / "mine").read_text() == "kept"


def test_get_names_are_checked(sb, tmp_path: Path) -> None:
    sh_ok(sb, "mkdir -p /out/sub && echo x > /out/sub/f")
    sb.files.get("/out", tmp_path / "o")
    assert sorted(p.name for p in (tmp_path / "o").rglob("*")) == ["f", "sub"]


def test_fds_from_the_sandbox_are_close_on_exec(sb) -> None:
    """An fd the init hands over (here, a file opened for writing) must not
    be inherited by a sandbox launched meanwhile from another thread: its
    init would hold the file open for writing, and an exec of it fail with
    ETXTBSY."""
    from sandbox import files

    fd = files.run_sync(files._open("write", "/tmp/cloexec", os.O_WRONLY | os.O_CREAT), sb._roundtrip)
    try:
        assert not os.get_inheritable(fd)
    finally:
        os.close(fd)


def test_exec_of_a_file_open_for_writing_is_retried_then_etxtbsy(sb) -> None:
    """ETXTBSY is retried for ~50 ms (a copy of a write fd held by a process
    the host forked or cloned meanwhile goes away at its execve); a file
    that stays open for writing still fails, with that errno."""
    import time

    from sandbox import ExecError, files

    data = sb.exec(["cat", "/bin/busybox"]).stdout
    sb.files.write_bytes("/tmp/true", data, mode=0o755)
    fd = files.run_sync(files._open("write", "/tmp/true", os.O_WRONLY), sb._roundtrip)
    try:
        t = time.monotonic()
        with pytest.raises(ExecError) as e:
            sb.exec(["/tmp/true"])
        assert e.value.errno == errno.ETXTBSY, e.value
        assert time.monotonic() - t >= 0.045  # 50 tries, 1 ms apart
    finally:
        os.close(fd)
    assert sb.exec(["/tmp/true"]).ok


def test_a_second_get_of_linked_files_replaces_the_links(sb, tmp_path: Path) -> None:
    """get() into a destination a first get() made: the links made then are
    there already (EEXIST), and are made again."""
    sh_ok(sb, "mkdir /res && echo one > /res/a && ln /res/a /res/b")
    out = tmp_path / "out"
    sb.files.get("/res", out)
    sh_ok(sb, "echo two > /res/a")  # the same file, rewritten
    sb.files.get("/res", out)
    a, b = (out / "a").stat(), (out / "b").stat()
    assert (a.st_ino, a.st_nlink) == (b.st_ino, 2) and (out / "b").read_text() == "two\n"


def test_get_skips_fifos_as_it_skips_symlinks(sb, tmp_path: Path) -> None:
    sh_ok(sb, "mkdir -p /res/sub && echo important > /res/result.txt && mkfifo /res/zz /res/sub/pipe")
    sb.files.get("/res", tmp_path / "out")
    assert sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*")) == [
        "result.txt",
        "sub",
    ]
    with pytest.raises(FileOpError):
        sb.files.get("/res/zz", tmp_path / "zz")  # asked for by name: not a file to copy


def test_get_of_a_tree_too_deep_fails_and_says_why(sb, tmp_path: Path) -> None:
    sh_ok(sb, "mkdir -p /res && echo x > /res/f && cd /res && for i in $(seq 70); do mkdir d && cd d; done")
    with pytest.raises(FileOpError) as e:
        sb.files.get("/res", tmp_path / "out")
    assert e.value.errno == errno.ELOOP and "more than MAX_DEPTH=64 directories deep" in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_list_and_get_count_entries_up_to_max_entries(sb, tmp_path: Path) -> None:
    # get() counts every entry of the tree, a skipped symlink too
    sh_ok(sb, "mkdir -p /o/d && touch /o/a /o/d/b /o/d/c && ln -s a /o/link")
    assert sb.files.list("/o", max_entries=3) == ["a", "d", "link"]
    with pytest.raises(FileOpError) as e:
        sb.files.list("/o", max_entries=2)
    assert e.value.errno == errno.EFBIG and str(e.value) == (
        "list /o: more than max_entries=2 entries: pass a larger max_entries (None: no limit)"
    )
    with pytest.raises(FileOpError) as e:
        sb.files.get("/o", tmp_path / "o", max_entries=4)
    assert e.value.errno == errno.EFBIG and "max_entries=4" in str(e.value)
    assert list(tmp_path.iterdir()) == []
    sb.files.get("/o", tmp_path / "o", max_entries=5)
    assert sorted(p.name for p in (tmp_path / "o").rglob("*")) == ["a", "b", "c", "d"]
