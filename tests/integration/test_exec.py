"""exec() and spawn(): exit codes, signals, stdin, large output, env, cwd,
users, timeouts (the whole process tree goes), exec failures as specific
exceptions, streaming, kill, concurrent execs."""

from __future__ import annotations

import errno
import threading
import time

import pytest

from sandbox import PIPE, CommandNotFound, ExecError, ExecFailed, Sandbox
from tests.conftest import sh, sh_ok

pytestmark = pytest.mark.integration

MB = 1 << 20


@pytest.mark.parametrize("code", [0, 1, 3, 42, 127, 255])
def test_exit_codes(sb, code: int) -> None:
    r = sh(sb, f"exit {code}")
    assert (r.exit_code, r.returncode, r.signal, r.reason) == (code, code, None, "exited")
    assert r.ok == (code == 0)


def test_check_raises_exec_failed(sb) -> None:
    with pytest.raises(ExecFailed) as e:
        sb.exec(["sh", "-c", "echo boom >&2; exit 7"], check=True)
    assert e.value.result.exit_code == 7
    assert "boom" in str(e.value)
    assert sb.exec(["true"], check=True).ok


def test_killed_by_signal(sb) -> None:
    r = sh(sb, "kill -9 $$")
    assert (r.reason, r.signal, r.exit_code, r.returncode) == ("signaled", 9, None, -9)
    r = sh(sb, "kill -TERM $$")
    assert (r.reason, r.signal) == ("signaled", 15)
    assert "SIGTERM" in r.describe()


def test_stdout_and_stderr_are_separate(sb) -> None:
    r = sh(sb, "echo out; echo err >&2")
    assert (r.stdout, r.stderr) == (b"out\n", b"err\n")
    assert (r.stdout_text, r.stderr_text) == ("out\n", "err\n")


def test_stdin(sb) -> None:
    assert sb.exec(["cat"], stdin=b"hello\x00world").stdout == b"hello\x00world"
    assert sb.exec(["wc", "-c"], stdin="ab").stdout.strip() == b"2"
    assert sb.exec(["cat"]).stdout == b""  # no stdin: /dev/null, EOF at once


def test_large_stdin_and_output(sb) -> None:
    data = bytes(range(256)) * (10 * MB // 256)
    r = sb.exec(["cat"], stdin=data)
    assert r.ok and len(r.stdout) == len(data) and r.stdout == data


def test_large_output_on_both_streams(sb) -> None:
    r = sh(sb, "head -c 10485760 /dev/zero; head -c 3145728 /dev/zero >&2")
    assert r.ok
    assert len(r.stdout) == 10 * MB and r.stdout.count(b"\0") == 10 * MB
    assert len(r.stderr) == 3 * MB


def test_output_is_not_lost_at_exit(sb) -> None:
    for _ in range(20):
        r = sh(sb, "seq 1 20000")
        assert r.stdout.split()[-1] == b"20000"
        assert len(r.stdout.split()) == 20000


def test_env_option(sb) -> None:
    r = sb.exec(["sh", "-c", 'echo "$FOO|$EMPTY|$SP"'], env={"FOO": "bar", "EMPTY": "", "SP": "a b=c"})
    assert r.stdout_text == "bar||a b=c\n"
    r = sb.exec(["sh", "-c", "echo $PATH"], env={"PATH": "/bin"})
    assert r.stdout_text == "/bin\n"


def test_each_exec_gets_its_own_environment(sandbox_host, busybox_rootfs) -> None:
    # exec requests are kept encoded per Spec, Limits and user
    # (SandboxBase._exec_message): nothing may leak between them
    show = ["sh", "-c", 'echo "$A|$B|$HOME|$HOSTNAME"']
    with (
        Sandbox(rootfs=busybox_rootfs, env={"A": "1"}, hostname="one") as one,
        Sandbox(rootfs=busybox_rootfs, env={"A": "2"}, hostname="two") as two,
    ):
        for _ in range(2):
            assert one.exec(show).stdout_text == "1||/root|one\n"
            assert two.exec(show).stdout_text == "2||/root|two\n"
            assert one.exec(show, env={"B": "x", "A": "y"}).stdout_text == "y|x|/root|one\n"
            assert one.exec(show).stdout_text == "1||/root|one\n"
            assert one.exec(show, user="1000").stdout_text == "1||/|one\n"
            assert one.exec(show, limits={"open_files": 64}).stdout_text == "1||/root|one\n"
            assert one.exec(["sh", "-c", "ulimit -n"], limits={"open_files": 64}).stdout_text == "64\n"
            assert one.exec(["sh", "-c", "ulimit -n"]).stdout_text != "64\n"


def test_cwd_option(sb) -> None:
    assert sb.exec(["pwd"], cwd="/etc").stdout_text == "/etc\n"
    assert sb.exec(["pwd"]).stdout_text == "/\n"


def test_workdir_option(sandbox_host, busybox_rootfs) -> None:
    with Sandbox(rootfs=busybox_rootfs, workdir="/home/user") as sb:
        assert sb.exec(["pwd"]).stdout_text == "/home/user\n"
        assert sb.exec(["pwd"], cwd="/tmp").stdout_text == "/tmp\n"


def test_bad_cwd(sb) -> None:
    with pytest.raises(ExecError) as e:
        sb.exec(["pwd"], cwd="/nonexistent")
    assert not isinstance(e.value, CommandNotFound)
    assert e.value.errno == errno.ENOENT
    assert e.value.stage == "chdir"
    assert "/nonexistent" in str(e.value)
    with pytest.raises(ExecError) as e:
        sb.exec(["pwd"], cwd="/etc/passwd")
    assert e.value.errno == errno.ENOTDIR
    assert sb.exec(["true"]).ok  # the sandbox still works


def test_user_numeric(sb) -> None:
    out = sb.exec(["sh", "-c", "id -u; id -g; id -G"], user="1000:1000").stdout_text.split("\n")
    assert out[:3] == ["1000", "1000", "1000"]
    out = sb.exec(["sh", "-c", "id -u; id -g"], user="1234:5678").stdout_text.split()
    assert out == ["1234", "5678"]
    assert sb.exec(["id", "-u"], user=1000).stdout_text == "1000\n"


def test_user_name_from_the_rootfs_passwd(sb) -> None:
    r = sb.exec(["sh", "-c", "id -u; id -g; id -un; echo $HOME"], user="user")
    assert r.stdout_text.split() == ["1000", "1000", "user", "/home/user"]


def test_user_with_supplementary_groups(sb) -> None:
    """Groups come from the sandbox's own /etc/group (read at the first
    lookup by name, here after the edit)."""
    sh_ok(sb, "echo 'extra:x:3000:user' >> /etc/group; echo 'other:x:3001:root,user' >> /etc/group")
    r = sb.exec(["id", "-G"], user="user")
    assert sorted(r.stdout_text.split()) == ["1000", "3000", "3001"]
    r = sb.exec(["id", "-g"], user="user:extra")
    assert r.stdout_text == "3000\n"


def test_sandbox_default_user(sandbox_host, busybox_rootfs) -> None:
    with Sandbox(rootfs=busybox_rootfs, user="user") as sb:
        assert sb.exec(["id", "-u"]).stdout_text == "1000\n"
        assert sb.exec(["id", "-u"], user="0").stdout_text == "0\n"


def test_unprivileged_user_cannot_write_roots_files(sb) -> None:
    r = sb.exec(["sh", "-c", "echo x >> /etc/passwd"], user="1000:1000")
    assert r.exit_code != 0
    assert b"Permission denied" in r.stderr


def test_unknown_user_names_the_option(sb) -> None:
    from sandbox import ConfigError

    with pytest.raises(ConfigError) as e:
        sb.exec(["true"], user="nosuchuser")
    assert e.value.option == "user"


def test_missing_binary(sb) -> None:
    with pytest.raises(CommandNotFound) as e:
        sb.exec(["/bin/nosuch"])
    assert str(e.value).startswith("exec /bin/nosuch: No such file or directory (ENOENT)")
    assert e.value.errno == errno.ENOENT
    with pytest.raises(CommandNotFound) as e:
        sb.exec(["nosuch-command"])
    assert str(e.value).startswith("exec nosuch-command: No such file or directory (ENOENT)")
    assert sb.exec(["true"]).ok


def test_not_executable(sb) -> None:
    sh_ok(sb, "echo 'echo hi' > /tmp/script; chmod 644 /tmp/script")
    with pytest.raises(ExecError) as e:
        sb.exec(["/tmp/script"])
    assert not isinstance(e.value, CommandNotFound)
    assert e.value.errno == errno.EACCES


def test_path_search_uses_the_exec_env(sb) -> None:
    sh_ok(sb, "mkdir -p /opt/x && printf '#!/bin/sh\\necho found\\n' > /opt/x/mycmd && chmod +x /opt/x/mycmd")
    with pytest.raises(CommandNotFound):
        sb.exec(["mycmd"])
    assert sb.exec(["mycmd"], env={"PATH": "/opt/x"}).stdout_text == "found\n"


def test_timeout(sb) -> None:
    r = sb.exec(["sleep", "10"], timeout=1)
    assert r.reason == "timeout"
    assert r.exit_code is None and r.signal == 9
    assert r.wall_time >= 1.0
    assert "timeout" in r.describe()


def _sandbox_processes(sb) -> list[str]:
    """cmdlines of every live process of the sandbox but the init and the
    shell that lists them (zombies have an empty cmdline)."""
    out = sh_ok(
        sb,
        "for p in /proc/[0-9]*; do [ $p = /proc/$$ ] && continue; "
        "c=$(tr '\\0' ' ' < $p/cmdline 2>/dev/null); [ -n \"$c\" ] && echo \"$c\"; done; true",
    )
    return [line for line in out.splitlines() if not line.startswith("sandbox-init")]


def _wait_for_no(sb, *needles: str, deadline: float = 5.0) -> list[str]:
    """Poll until no process matching a needle is left; return the leftovers
    (a SIGKILLed process may take a moment to be reaped: the deadline is a
    bound, not a condition of passing)."""
    end = time.monotonic() + deadline
    while True:
        left = [p for p in _sandbox_processes(sb) if any(n in p for n in needles)]
        if not left or time.monotonic() > end:
            return left
        time.sleep(0.02)


def test_timeout_kills_the_whole_process_tree(sb) -> None:
    r = sb.exec(["sh", "-c", "sleep 100 & sleep 100"], timeout=1)
    assert r.reason == "timeout"
    assert _wait_for_no(sb, "sleep 100") == []
    r = sb.exec(["sh", "-c", "sleep 100 & sleep 100 & (sleep 100 & sleep 100)"], timeout=1)
    assert r.reason == "timeout"
    assert _wait_for_no(sb, "sleep 100") == []


def test_timeout_kills_children_in_other_process_groups(sb) -> None:
    """`set -m` puts each background job in its own process group: still
    in the command's session, so still killed."""
    r = sb.exec(["sh", "-c", "set -m; sleep 102 & sleep 103 & sleep 104"], timeout=1)
    assert r.reason == "timeout"
    assert _wait_for_no(sb, "sleep 102", "sleep 103", "sleep 104") == []


def test_timeout_kills_children_that_made_their_own_session(sb) -> None:
    try:
        r = sb.exec(["sh", "-c", "setsid sleep 101 & sleep 100"], timeout=1)
        assert r.reason == "timeout"
        assert _wait_for_no(sb, "sleep 101", deadline=2.0) == []
    finally:
        sh(sb, "kill -9 $(pidof sleep) 2>/dev/null; true")


def test_timeout_does_not_hit_a_fast_command(sb) -> None:
    r = sb.exec(["echo", "hi"], timeout=30)
    assert r.reason == "exited" and r.stdout == b"hi\n"


def test_spawn_streaming(sb) -> None:
    p = sb.spawn(["sh", "-c", "echo ready; read x; echo got $x; read y; echo got $y >&2"], stdin=PIPE)
    assert p.stdout.readline() == b"ready\n"
    p.stdin.write(b"one\n")
    assert p.stdout.readline() == b"got one\n"
    p.stdin.write(b"two\n")
    p.stdin.close()
    r = p.wait()
    assert r.ok
    assert b"got two" in r.stderr
    assert p.returncode == 0


def test_argv_given_back_is_a_copy(sb) -> None:
    """Found in review: the result's argv and the Process's were the one
    list the collector kept: a change to one changed the other."""
    argv = ["echo", "a"]
    p = sb.spawn(argv)
    argv.append("given")
    p.argv.append("process")
    r = p.wait()
    r.argv.append("result")
    assert p.argv == ["echo", "a"] and r.stdout == b"a\n"
    assert sb.exec(["true"]).argv == ["true"]


def test_spawn_kill(sb) -> None:
    p = sb.spawn(["sleep", "100"])
    assert p.poll() is None
    p.kill()
    r = p.wait()
    assert (r.reason, r.signal) == ("signaled", 9)
    assert p.poll() is r or p.poll() == r
    p.kill()  # after the end: a no-op


def test_spawn_kill_takes_the_tree(sb) -> None:
    p = sb.spawn(["sh", "-c", "sleep 105 & sleep 106 & echo started; wait"])
    assert p.stdout.readline() == b"started\n"
    p.kill()
    assert p.wait().signal == 9
    assert _wait_for_no(sb, "sleep 105", "sleep 106") == []


def test_spawn_wait_with_timeout(sb) -> None:
    p = sb.spawn(["sleep", "100"])
    r = p.wait(timeout=0.5)
    assert r.reason == "timeout"


def test_spawn_pid_is_inside_the_sandbox(sb) -> None:
    # spawn() returns once execve is past its point of no return, which can be
    # before the new program's argv is in place: wait for the program to speak
    p = sb.spawn(["sh", "-c", "echo ready; sleep 100; true"])  # `; true`: sh does not exec sleep
    try:
        assert 1 < p.pid < 1000
        assert p.stdout is not None and p.stdout.readline() == b"ready\n"
        assert sb.files.read_bytes(f"/proc/{p.pid}/cmdline") == b"sh\x00-c\x00echo ready; sleep 100; true\x00"
    finally:
        p.kill()
        p.wait()


def test_concurrent_execs_from_threads(sb) -> None:
    errors: list[BaseException] = []
    results: dict[tuple[int, int], bytes] = {}

    def worker(t: int) -> None:
        try:
            for i in range(25):
                r = sb.exec(["sh", "-c", f"echo {t}-{i}; echo err-{t}-{i} >&2"], stdin=f"{t}")
                assert r.ok and r.stderr == f"err-{t}-{i}\n".encode()
                results[(t, i)] = r.stdout
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    assert len(results) == 200
    for (t, i), out in results.items():
        assert out == f"{t}-{i}\n".encode()


def test_concurrent_spawns_overlap(sb) -> None:
    """Eight commands alive at once, each released by its own stdin."""
    procs = [sb.spawn(["sh", "-c", "read x; echo $x"], stdin=PIPE) for _ in range(8)]
    for i, p in enumerate(procs):
        p.stdin.write(f"p{i}\n".encode())
        p.stdin.close()
    assert [p.wait().stdout for p in procs] == [f"p{i}\n".encode() for i in range(8)]


def test_accounting(sb) -> None:
    r = sh(sb, "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done")
    assert r.ok
    assert r.cpu_time > 0
    assert r.max_rss > 0
    assert r.wall_time > 0
