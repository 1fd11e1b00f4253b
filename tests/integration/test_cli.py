"""`sandbox run`: exit statuses, JSON output, options shaped like docker's."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import require_sandbox_host

pytestmark = pytest.mark.integration


def sandbox(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    require_sandbox_host()
    return subprocess.run(
        [sys.executable, "-m", "sandbox.cli", *args], input=stdin, capture_output=True, timeout=60
    )


def test_exit_status_is_the_commands(busybox_rootfs) -> None:
    r = sandbox("run", "--rootfs", str(busybox_rootfs), "--", "sh", "-c", "echo out; echo err >&2; exit 7")
    assert r.returncode == 7
    assert r.stdout == b"out\n"
    assert r.stderr == b"err\n"


def test_killed_by_signal_is_128_plus_n(busybox_rootfs) -> None:
    r = sandbox("run", "--rootfs", str(busybox_rootfs), "--", "sh", "-c", "kill -TERM $$")
    assert r.returncode == 128 + 15


def test_timeout(busybox_rootfs) -> None:
    r = sandbox("run", "--rootfs", str(busybox_rootfs), "--timeout", "0.3", "--", "sleep", "30")
    assert r.returncode == 128 + 9
    assert b"timeout" in r.stderr


def test_json(busybox_rootfs) -> None:
    r = sandbox(
        "run",
        "--rootfs",
        str(busybox_rootfs),
        "--json",
        "-e",
        "GREETING=hi",
        "-w",
        "/tmp",
        "--",
        "sh",
        "-c",
        "echo $GREETING; pwd",
    )
    assert r.returncode == 0
    d = json.loads(r.stdout)
    assert d["stdout"] == "hi\n/tmp\n"
    assert d["reason"] == "exited"
    assert d["exit_code"] == 0


def test_user_and_mount(busybox_rootfs, tmp_path) -> None:
    (tmp_path / "in.txt").write_text("host data")
    # the sandbox reads as its own unprivileged host uid: pytest's dirs are 0700
    tmp_path.chmod(0o755)
    r = sandbox(
        "run",
        "--rootfs",
        str(busybox_rootfs),
        "-u",
        "1000:1000",
        "-v",
        f"{tmp_path}:/data",
        "--",
        "sh",
        "-c",
        "id -u; cat /data/in.txt; touch /data/x",
    )
    assert r.stdout.splitlines()[:2] == [b"1000", b"host data"]
    assert b"Read-only file system" in r.stderr
    assert not (tmp_path / "x").exists()


def test_stdin_with_i(busybox_rootfs) -> None:
    r = sandbox("run", "-i", "--rootfs", str(busybox_rootfs), "--", "wc", "-c", stdin=b"12345")
    assert r.stdout.strip() == b"5"


def test_missing_command_is_127(busybox_rootfs) -> None:
    r = sandbox("run", "--rootfs", str(busybox_rootfs), "--", "/bin/nosuch")
    assert r.returncode == 127
    assert b"exec /bin/nosuch: No such file or directory (ENOENT)" in r.stderr


def test_a_command_that_cannot_be_executed_is_126(busybox_rootfs) -> None:
    """As a shell says it: found, but its execve failed (here EACCES: /etc
    is a directory; /etc/passwd is no executable)."""
    for path, errname in (("/etc/passwd", b"EACCES"), ("/etc", b"EACCES")):
        r = sandbox("run", "--rootfs", str(busybox_rootfs), "--json", "--", path)
        assert r.returncode == 126, r.stderr
        assert f"exec {path}: ".encode() in r.stderr and errname in r.stderr
        d = json.loads(r.stdout)
        assert d["error"] == "ExecError" and d["status"] == 126


def test_bad_option_is_125_and_names_it(busybox_rootfs) -> None:
    r = sandbox("run", "--rootfs", "relative/dir", "--", "true")
    assert r.returncode == 125
    assert b"rootfs" in r.stderr and b"absolute" in r.stderr
    r = sandbox("run", "--rootfs", str(busybox_rootfs), "-v", "/nonexistent-src:/x", "--", "true")
    assert r.returncode == 125
    assert b"mounts[0].src" in r.stderr


def test_default_rootfs_env(busybox_rootfs) -> None:
    # the embedded default image: $SANDBOX_HOME/rootfs/busybox
    home = busybox_rootfs.parent.parent
    env = dict(os.environ, SANDBOX_HOME=str(home))
    require_sandbox_host()
    r = subprocess.run(
        [sys.executable, "-m", "sandbox.cli", "run", "--", "echo", "default"],
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert r.stdout == b"default\n", r.stderr


def test_secrets_from_a_file_and_from_the_environment(busybox_rootfs, tmp_path) -> None:
    (tmp_path / "tok").write_bytes(b"from-a-file")
    require_sandbox_host()
    env = dict(os.environ, SANDBOX_TEST_TOKEN="from-the-env")
    r = subprocess.run(
        [sys.executable, "-m", "sandbox.cli", "run", "--rootfs", str(busybox_rootfs),
         "--secret", f"a=@{tmp_path / 'tok'}", "--secret", "b=env:SANDBOX_TEST_TOKEN",
         "--", "sh", "-c", "cat /run/secrets/a; echo; cat /run/secrets/b"],
        env=env, capture_output=True, timeout=60,
    )  # fmt: skip
    assert r.stdout == b"from-a-file\nfrom-the-env", r.stderr


def test_redact_secrets_scrubs_the_streamed_output(busybox_rootfs) -> None:
    """--redact-secrets: the output copied as it comes is scrubbed too, a
    secret written in two pieces (two reads of the pipe, or one) as well."""
    require_sandbox_host()
    value = "sbx-cli-secret-" + os.urandom(12).hex()
    env = dict(os.environ, SANDBOX_TEST_TOKEN=value)
    script = f"printf %s {value[:10]}; printf %s {value[10:]}; echo; echo after; printf %s {value} >&2"
    r = subprocess.run(
        [sys.executable, "-m", "sandbox.cli", "run", "--rootfs", str(busybox_rootfs),
         "--secret", "t=env:SANDBOX_TEST_TOKEN", "--redact-secrets", "--", "sh", "-c", script],
        env=env, capture_output=True, timeout=60,
    )  # fmt: skip
    assert (r.returncode, r.stdout, r.stderr) == (0, b"[REDACTED]\nafter\n", b"[REDACTED]"), r


def test_redact_secrets_with_the_output_cap_cutting_inside_a_secret(busybox_rootfs) -> None:
    """The cap ends the stream in the middle of a secret: the part of it
    that came is not printed either (a start of a secret held back by the
    streaming scrubber went out as it was)."""
    require_sandbox_host()
    value = "sbx-cli-secret-" + os.urandom(12).hex()
    env = dict(os.environ, SANDBOX_TEST_TOKEN=value)
    r = subprocess.run(
        [sys.executable, "-m", "sandbox.cli", "run", "--rootfs", str(busybox_rootfs),
         "--secret", "t=env:SANDBOX_TEST_TOKEN", "--redact-secrets", "--output-limit", "4096",
         "--", "sh", "-c", "head -c 4080 /dev/zero | tr '\\0' x; cat /run/secrets/t"],
        env=env, capture_output=True, timeout=60,
    )  # fmt: skip
    assert r.stdout == b"x" * 4080 + b"[REDACTED]", (r.stdout[-60:], r.stderr)
    assert value[:8].encode() not in r.stdout + r.stderr


def test_a_secret_value_on_the_command_line_is_refused(busybox_rootfs) -> None:
    r = sandbox("run", "--rootfs", str(busybox_rootfs), "--secret", "a=plainvalue", "--", "true")
    assert r.returncode == 125
    assert b"--secret" in r.stderr and b"NAME=@FILE or NAME=env:VAR" in r.stderr


def test_seccomp_none_and_cap_add(busybox_rootfs) -> None:
    r = sandbox(
        "run",
        "--rootfs",
        str(busybox_rootfs),
        "--seccomp",
        "none",
        "--cap-add",
        "CAP_CHOWN",
        "--",
        "sh",
        "-c",
        "grep -E '^(Seccomp|CapEff):' /proc/self/status",
    )
    assert r.stdout.split() == [b"CapEff:", b"0000000000000001", b"Seccomp:", b"0"], r.stderr


def test_idmap(busybox_rootfs) -> None:
    def start(*opt: str) -> bytes:
        r = sandbox("run", "--rootfs", str(busybox_rootfs), *opt, "--", "cat", "/proc/self/uid_map")
        assert r.returncode == 0, r.stderr
        return r.stdout.split()[1]

    assert start("--idmap", "300000") == b"300000"
    assert int(start()) >= 524288  # a range of its own by default (sandbox/idranges.py)
    r = sandbox("run", "--rootfs", str(busybox_rootfs), "--idmap", "mine", "--", "true")
    assert r.returncode == 125 and b"--idmap" in r.stderr


def test_json_when_the_command_is_missing(busybox_rootfs) -> None:
    """Found in review: --json printed nothing on stdout for a missing command."""
    r = sandbox("run", "--rootfs", str(busybox_rootfs), "--json", "--", "/bin/nosuch")
    assert r.returncode == 127
    d = json.loads(r.stdout)
    assert d["error"] == "CommandNotFound" and d["status"] == 127
    assert "/bin/nosuch" in d["message"]


def test_json_when_the_sandbox_cannot_start() -> None:
    r = sandbox("run", "--rootfs", "/nonexistent-rootfs", "--json", "--", "true")
    assert r.returncode == 125
    d = json.loads(r.stdout)
    assert d["status"] == 125 and "rootfs" in d["message"]
