"""Secrets (issue 5): `secrets={"name": bytes | str | Path}` appear at
/run/secrets/NAME on a small read-only tmpfs (noexec, nosuid, nodev), mode
0400, owned by the sandbox's user; their bytes never touch the host disk and
never show in a repr or a log line; redact_secrets=True scrubs them from
captured output."""

from __future__ import annotations

import logging
import os
import secrets as pysecrets
import stat
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from sandbox import PIPE, AsyncSandbox, ConfigError, Sandbox
from tests.conftest import sh, sh_ok

pytestmark = pytest.mark.integration

SECRETS_DIR = "/run/secrets"


def unique_secret() -> bytes:
    """A value that cannot be on the disk by chance."""
    return b"sbx-secret-" + pysecrets.token_hex(24).encode()


def secret_stat(sb: Any, name: str, user: str | None = None) -> tuple[int, int, int]:
    out = sh_ok(sb, f"stat -c '%a %u %g' {SECRETS_DIR}/{name}", user=user).split()
    return int(out[0], 8), int(out[1]), int(out[2])


@pytest.fixture(params=["busybox", "debian"])
def rootfs(request: pytest.FixtureRequest, sandbox_host: None) -> Path:
    return request.getfixturevalue(f"{request.param}_rootfs")


# -- inside ---------------------------------------------------------------------------


def test_secret_is_readable_inside(rootfs) -> None:
    with Sandbox(rootfs=rootfs, secrets={"token": b"s3cr3t", "other.key": "text-\u00e9"}) as sb:
        assert sb.exec(["cat", f"{SECRETS_DIR}/token"]).stdout == b"s3cr3t"
        assert sb.exec(["cat", f"{SECRETS_DIR}/other.key"]).stdout == "text-\u00e9".encode()
        assert sorted(sh_ok(sb, f"ls {SECRETS_DIR}").split()) == ["other.key", "token"]
        assert secret_stat(sb, "token") == (0o400, 0, 0)


def test_secret_belongs_to_the_sandbox_user(rootfs) -> None:
    with Sandbox(rootfs=rootfs, user="1000:1000", secrets={"token": b"s3cr3t"}) as sb:
        assert secret_stat(sb, "token") == (0o400, 1000, 1000)
        assert sb.exec(["cat", f"{SECRETS_DIR}/token"]).stdout == b"s3cr3t"
        # 0400: another user of the sandbox cannot read it (and holds no cap to override)
        r = sb.exec(["cat", f"{SECRETS_DIR}/token"], user="2000:2000")
        assert r.exit_code != 0 and b"Permission denied" in r.stderr, r.stderr


def test_secret_belongs_to_a_named_sandbox_user(sandbox_host, debian_rootfs) -> None:
    # user="nobody" is looked up in the image's /etc/passwd (65534:65534 in Debian)
    with Sandbox(rootfs=debian_rootfs, user="nobody", secrets={"token": b"s3cr3t"}) as sb:
        assert sh_ok(sb, "id -u").strip() == "65534"
        assert secret_stat(sb, "token") == (0o400, 65534, 65534)
        assert sb.exec(["cat", f"{SECRETS_DIR}/token"]).stdout == b"s3cr3t"
        # read-only once given to the user, as for numeric users
        rows = [line.split() for line in sb.files.read_text("/proc/mounts").splitlines()]
        assert "ro" in next(r for r in rows if r[1] == SECRETS_DIR)[3].split(",")
        r = sb.exec(["sh", "-c", f"echo x > {SECRETS_DIR}/new"], user="0")
        assert r.exit_code != 0 and b"Read-only file system" in r.stderr, r.stderr


def test_secrets_tmpfs_is_read_only_noexec_nosuid_nodev(rootfs) -> None:
    with Sandbox(rootfs=rootfs, secrets={"token": b"#!/bin/sh\necho ran\n"}) as sb:
        rows = [line.split() for line in sb.files.read_text("/proc/mounts").splitlines()]
        mine = [r for r in rows if r[1] == SECRETS_DIR]
        assert len(mine) == 1, rows
        fstype, opts = mine[0][2], mine[0][3].split(",")
        assert fstype == "tmpfs"
        assert {"ro", "nosuid", "nodev", "noexec"} <= set(opts), opts
        r = sh(sb, f"echo x > {SECRETS_DIR}/new")
        assert r.exit_code != 0 and b"Read-only file system" in r.stderr, r.stderr
        # noexec: even a script the owner may read does not run from there
        r = sh(sb, f"{SECRETS_DIR}/token")
        assert r.exit_code != 0 and b"ran" not in r.stdout


def test_secret_with_a_read_only_rootfs(rootfs) -> None:
    """The images have /run but no /run/secrets; a read-only rootfs must
    still get its secrets (the mount point cannot be made in the image)."""
    assert not (rootfs / "run" / "secrets").exists()
    with Sandbox(rootfs=rootfs, read_only=True, secrets={"token": b"s3cr3t"}) as sb:
        assert sb.exec(["cat", f"{SECRETS_DIR}/token"]).stdout == b"s3cr3t"
        r = sh(sb, "touch /newfile")
        assert r.exit_code != 0 and b"Read-only file system" in r.stderr


def test_no_secrets_no_mount(sandbox_host, busybox_rootfs) -> None:
    with Sandbox(rootfs=busybox_rootfs) as sb:
        points = [line.split()[1] for line in sb.files.read_text("/proc/mounts").splitlines()]
        assert SECRETS_DIR not in points


# -- never on the host disk, in a repr or a log ------------------------------------------


def _scan_roots() -> list[Path]:
    home = Path(os.environ.get("SANDBOX_HOME", "/var/lib/sandbox"))
    return [p for p in (home, Path("/tmp"), Path("/var/tmp"), Path("/dev/shm")) if p.is_dir()]


def _files_touched_since(top: Path, since: float) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(top, onerror=lambda e: None):
        # other sessions' job output is not ours to read, and cannot hold the value
        dirnames[:] = [d for d in dirnames if not d.startswith("bash_jobs.")]
        for name in filenames:
            p = Path(dirpath) / name
            try:
                st = os.lstat(p)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and max(st.st_mtime, st.st_ctime) >= since:
                yield p


def _contains(path: Path, needle: bytes) -> bool:
    try:
        with open(path, "rb") as f:
            tail = b""
            while chunk := f.read(1 << 20):
                if needle in tail + chunk:
                    return True
                tail = chunk[-len(needle) :]
    except OSError:
        return False
    return False


def test_secret_never_reaches_the_host_disk(rootfs, caplog) -> None:
    value = unique_secret()
    since = time.time() - 2  # mtime granularity: scanning a little more is harmless
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sb = Sandbox(rootfs=rootfs, secrets={"token": value, "text": value.decode() + "-str"})
        reprs = [repr(sb), str(sb)]
        with sb:
            reprs += [repr(sb), str(sb), repr(sb._spec)]
            assert sb.exec(["cat", f"{SECRETS_DIR}/token"]).stdout == value
            # copies inside the sandbox: its writable layer, /tmp and /dev/shm are tmpfs
            sh_ok(sb, f"cp {SECRETS_DIR}/token /root/copy; cp {SECRETS_DIR}/token /tmp/copy;"
                      f"cp {SECRETS_DIR}/text /dev/shm/copy; sync")  # fmt: skip
            r = sb.exec(["cat", "/tmp/copy"])
            reprs.append(repr(r))
        reprs += [repr(sb), str(sb)]
    assert not [s for s in reprs if value.decode() in s], reprs
    logged = caplog.text + "".join(repr(rec.args) + rec.getMessage() for rec in caplog.records)
    assert value.decode() not in logged
    assert not [w for w in caught if value.decode() in str(w.message)]
    found = [p for top in _scan_roots() for p in _files_touched_since(top, since) if _contains(p, value)]
    assert found == [], f"the secret is on the host disk: {found}"


def test_scan_would_find_a_secret_on_disk(tmp_path: Path) -> None:
    """The disk scan of the test above is not vacuous."""
    value = unique_secret()
    since = time.time() - 2
    planted = tmp_path / "deep" / "planted"
    planted.parent.mkdir()
    planted.write_bytes(b"x" * ((1 << 20) - 5) + value + b"y")  # across a read boundary
    found = [p for p in _files_touched_since(Path("/tmp"), since) if _contains(p, value)]
    assert found == [planted]


def test_secret_not_in_an_error_message(sandbox_host, busybox_rootfs) -> None:
    value = unique_secret()
    with pytest.raises(ConfigError) as e:
        Sandbox(rootfs=busybox_rootfs, secrets={"ok": value, "bad/name": value})
    assert value.decode() not in str(e.value) and value.decode() not in repr(e.value)


# -- redaction ----------------------------------------------------------------------------


def test_redact_secrets_scrubs_stdout_and_stderr(rootfs) -> None:
    value = unique_secret()
    with Sandbox(rootfs=rootfs, secrets={"token": value}, redact_secrets=True) as sb:
        r = sh(sb, f"cat {SECRETS_DIR}/token; echo; cat {SECRETS_DIR}/token >&2; echo tail >&2")
        assert r.stdout == b"[REDACTED]\n"
        assert r.stderr == b"[REDACTED]tail\n"
        # written in two pieces: still scrubbed whole
        half = len(value) // 2
        r = sh(sb, f"printf %s '{value[:half].decode()}'; printf %s '{value[half:].decode()}'")
        assert r.stdout == b"[REDACTED]"
        # the file itself is intact
        assert (
            sh(sb, f"sha256sum < {SECRETS_DIR}/token").stdout.split()[0]
            == sh(sb, f"printf %s '{value.decode()}' | sha256sum").stdout.split()[0]
        )


def test_redaction_also_for_spawn(sandbox_host, busybox_rootfs) -> None:
    value = unique_secret()
    with Sandbox(rootfs=busybox_rootfs, secrets={"token": value}, redact_secrets=True) as sb:
        p = sb.spawn(["cat", f"{SECRETS_DIR}/token"])
        assert p.communicate().stdout == b"[REDACTED]"


# the secret in two writes, with a read of stdin between them
TWO_PIECES = "printf %s {a}; read x; printf %s {b}; echo; echo after"


def test_redaction_of_streams_a_caller_reads(sandbox_host, busybox_rootfs) -> None:
    """Process.stdout read by the caller is scrubbed too, a secret cut
    between two reads of the pipe as well; what was read but not given out
    when communicate() takes over goes into its result."""
    value = unique_secret()
    half = len(value) // 2
    cmd = TWO_PIECES.format(a=value[:half].decode(), b=value[half:].decode())
    with Sandbox(rootfs=busybox_rootfs, secrets={"token": value}, redact_secrets=True) as sb:
        p = sb.spawn(["sh", "-c", cmd], stdin=PIPE, timeout=30)
        assert p.stdin is not None and p.stdout is not None
        p.stdin.write(b"go\n")
        assert p.stdout.readline() == b"[REDACTED]\n"
        assert p.stdout.readline() == b"after\n"
        assert p.stdout.read() == b""
        p.wait(timeout=30)
        p = sb.spawn(["sh", "-c", f"echo x; {cmd}"], stdin=PIPE, timeout=30)
        assert p.stdout is not None
        assert p.stdout.read(1) == b"x"
        r = p.communicate(b"go\n", timeout=30)
        assert r.stdout == b"\n[REDACTED]\nafter\n", r.stdout


def test_redaction_of_async_reads(sandbox_host, busybox_rootfs) -> None:
    value = unique_secret()
    half = len(value) // 2
    cmd = TWO_PIECES.format(a=value[:half].decode(), b=value[half:].decode())

    async def main() -> bytes:
        async with AsyncSandbox(rootfs=busybox_rootfs, secrets={"token": value}, redact_secrets=True) as sb:
            p = await sb.spawn(["sh", "-c", cmd], stdin=PIPE, timeout=30)
            await p.write_stdin(b"go\n")
            out = b""
            while chunk := await p.read_stdout():
                out += chunk
            await p.wait(timeout=30)
            return out

    assert anyio.run(main) == b"[REDACTED]\nafter\n"


def test_no_redaction_unless_asked(sandbox_host, busybox_rootfs) -> None:
    value = unique_secret()
    with Sandbox(rootfs=busybox_rootfs, secrets={"token": value}) as sb:
        assert sb.exec(["cat", f"{SECRETS_DIR}/token"]).stdout == value


# -- where the content comes from ---------------------------------------------------------


def test_secret_from_a_path_is_read_once(sandbox_host, busybox_rootfs, tmp_path: Path) -> None:
    src = tmp_path / "token"
    src.write_bytes(b"first\x00\xffbinary")
    sb = Sandbox(rootfs=busybox_rootfs, secrets={"token": src})
    # read when the Sandbox is made: later changes, even removal, do not matter
    src.write_bytes(b"second")
    src.unlink()
    with sb:
        assert sb.exec(["cat", f"{SECRETS_DIR}/token"]).stdout == b"first\x00\xffbinary"


def test_secret_from_a_missing_path(sandbox_host, busybox_rootfs, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        Sandbox(rootfs=busybox_rootfs, secrets={"token": tmp_path / "missing"})
    assert e.value.option == "secrets['token']"


@pytest.mark.parametrize("name", ["../x", "a/b", "", ".", "..", ".hidden", "x\0y", "x\n", "é"])
def test_bad_secret_names(sandbox_host, busybox_rootfs, name: str) -> None:
    with pytest.raises(ConfigError) as e:
        Sandbox(rootfs=busybox_rootfs, secrets={name: b"value"})
    assert e.value.option == f"secrets[{name!r}]", e.value.option
    assert str(e.value).startswith(f"secrets[{name!r}]")


@pytest.mark.parametrize("value", [123, None, ["x"], {"a": "b"}])
def test_bad_secret_values(sandbox_host, busybox_rootfs, value: object) -> None:
    with pytest.raises(ConfigError) as e:
        Sandbox(rootfs=busybox_rootfs, secrets={"token": value})
    assert e.value.option == "secrets['token']"


def test_secrets_must_be_a_mapping(sandbox_host, busybox_rootfs) -> None:
    with pytest.raises(ConfigError) as e:
        Sandbox(rootfs=busybox_rootfs, secrets=[("token", b"x")])
    assert e.value.option == "secrets"


def test_oversized_secret(sandbox_host, busybox_rootfs) -> None:
    with pytest.raises(ConfigError) as e:
        Sandbox(rootfs=busybox_rootfs, secrets={"token": b"x" * ((1 << 20) + 1)})
    assert e.value.option == "secrets['token']"
