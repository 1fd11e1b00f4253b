"""users.resolve: exec users looked up in the sandbox's own /etc/passwd and
/etc/group.  Those files are image content, so untrusted: garbage, huge
lines and odd digits must end in a User or a ConfigError naming the option,
never in another exception."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest

from sandbox.errors import ConfigError
from sandbox.users import MAX_DB, MAX_ID, ROOT, User, needs_lookup, resolve

NGROUPS_MAX = 65536  # linux/limits.h: the kernel refuses more in setgroups

PASSWD = b"""\
root:x:0:0:root:/root:/bin/sh
# a comment:x:5:5::/:/bin/sh
user:x:1000:1000:user:/home/user:/bin/sh
app:x:1001:2000::/srv/app:/bin/false
nohome:x:1002:1002:::/bin/sh
bad-uid:x:abc:1:::/bin/sh
short:x:7
"""
GROUP = b"""\
root:x:0:
wheel:x:10:user,app
staff:x:50:user
apps:x:2000:
dup:x:10:user
empty:x::user
"""


def test_none_is_container_root() -> None:
    assert resolve("user", None) is ROOT
    assert User(0, 0, (), "/root") == ROOT


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("0", User(0, 0, (0,), "/root")),
        ("1000", User(1000, 1000, (1000,), "/")),
        ("1000:2000", User(1000, 2000, (2000,), "/")),
        ("0:5", User(0, 5, (5,), "/root")),
        (str(MAX_ID), User(MAX_ID, MAX_ID, (MAX_ID,), "/")),
    ],
)
def test_numeric_without_databases(spec: str, expected: User) -> None:
    assert not needs_lookup(spec)
    assert resolve("user", spec) == expected


def test_name_from_passwd_with_supplementary_groups() -> None:
    u = resolve("user", "user", PASSWD, GROUP)
    assert (u.uid, u.gid, u.home) == (1000, 1000, "/home/user")
    assert u.groups[0] == 1000
    assert set(u.groups) == {1000, 10, 50}
    assert len(u.groups) == len(set(u.groups))  # wheel and dup share gid 10


def test_numeric_uid_takes_gid_and_home_from_passwd() -> None:
    u = resolve("user", "1001", PASSWD, GROUP)
    assert (u.uid, u.gid, u.home) == (1001, 2000, "/srv/app")
    assert set(u.groups) == {2000, 10}


def test_name_with_group() -> None:
    u = resolve("user", "user:staff", PASSWD, GROUP)
    assert (u.uid, u.gid) == (1000, 50)
    assert u.groups[0] == 50


def test_name_with_numeric_group() -> None:
    assert resolve("user", "user:4242", PASSWD, GROUP).gid == 4242


def test_empty_home_is_slash() -> None:
    assert resolve("user", "nohome", PASSWD, GROUP).home == "/"


def test_comment_lines_are_not_users() -> None:
    with pytest.raises(ConfigError):
        resolve("user", "# a comment", PASSWD, GROUP)


@pytest.mark.parametrize(
    "spec",
    [
        "nosuch",
        "bad-uid",
        "short",
        "user:nosuch",
        "user:empty",
        "",
        "a:b:c",
        "1:2:3",
        ":",
        str(MAX_ID + 1),
        "99999999999999999999",
    ],
)
def test_bad_users_name_the_option(spec: str) -> None:
    with pytest.raises(ConfigError) as e:
        resolve("exec.user", spec, PASSWD, GROUP)
    assert e.value.option == "exec.user"


def test_no_databases_at_all() -> None:
    with pytest.raises(ConfigError, match="no user 'user'"):
        resolve("user", "user", None, None)
    assert resolve("user", "5", None, None).uid == 5


# -- hostile databases ---------------------------------------------------------------


@pytest.mark.parametrize("digits", ["\u00b9", "\u00b2\u00b3", "\u2460"])
def test_unicode_digits_in_passwd_are_not_ids(digits: str) -> None:
    """'¹'.isdigit() is True but int('¹') raises: an image whose passwd has
    such a uid must give a ConfigError, not a bare ValueError from int()."""
    pw = f"evil:x:{digits}:1000::/:/bin/sh\nevil2:x:1000:{digits}::/:/bin/sh\n".encode()
    for name in ("evil", "evil2"):
        with pytest.raises(ConfigError):
            resolve("user", name, pw, b"")


@pytest.mark.parametrize("spec", ["\u00b2", "\u00b9:0", "0:\u00b2", "\u0661\u0660"])
def test_unicode_digits_in_the_user_option(spec: str) -> None:
    """Only ASCII digits are ids: '²' must not crash int(), and U+0661 U+0660
    (Arabic-Indic "10") must not silently become uid 10."""
    with pytest.raises(ConfigError) as e:
        resolve("user", spec, PASSWD, GROUP)
    assert e.value.option == "user"


def test_unicode_digit_gid_in_group_file() -> None:
    gr = b"odd:x:\xc2\xb2:user\n"  # '²'
    try:
        u = resolve("user", "user", PASSWD, gr)
    except ConfigError:
        return
    assert all(isinstance(g, int) for g in u.groups)


def test_huge_single_line_is_bounded() -> None:
    """A 16 MB passwd without a newline: only MAX_DB bytes are looked at."""
    pw = b"user:x:1000:1000::/home/user:/bin/sh" + b"x" * (16 << 20)
    # The first row is intact within the bound, with a huge last field.
    u = resolve("user", "user", pw, b"")
    assert u.uid == 1000


def test_rows_beyond_the_bound_are_ignored() -> None:
    pw = b"#" * MAX_DB + b"\nuser:x:1000:1000::/:/bin/sh\n"
    with pytest.raises(ConfigError):
        resolve("user", "user", pw, b"")


def test_garbage_never_raises_anything_but_config_error() -> None:
    rng = random.Random(20240601)
    alphabet = b":,\n#0123456789user\xff\xfe\x00\xc2\xb2 "
    for _ in range(2000):
        pw = bytes(rng.choice(alphabet) for _ in range(rng.randrange(0, 300)))
        gr = bytes(rng.choice(alphabet) for _ in range(rng.randrange(0, 300)))
        spec = rng.choice(["user", "0", "1000", "user:user", "u", "1000:0"])
        try:
            u = resolve("user", spec, pw, gr)
        except ConfigError:
            continue
        assert 0 <= u.uid <= MAX_ID and 0 <= u.gid <= MAX_ID
        assert all(0 <= g <= MAX_ID for g in u.groups)


def test_binary_garbage() -> None:
    blob = bytes(range(256)) * 1000
    with pytest.raises(ConfigError):
        resolve("user", "user", blob, blob)


_MANY_GROUPS = r"""
import sys
from sandbox.users import resolve
n = int(sys.argv[1])
gr = "".join(f"g{i}:x:{i + 5000}:user\n" for i in range(n)).encode()
try:
    u = resolve("user", "user", b"user:x:1000:1000::/:/bin/sh\n", gr)
    print(len(u.groups))
except Exception as e:
    print(type(e).__name__)
"""


def test_many_groups_are_bounded() -> None:
    """A hostile /etc/group (2 MB, under MAX_DB) listing the user in 100,000
    groups.  The kernel takes at most NGROUPS_MAX supplementary groups, so
    resolve must stop there (or refuse with ConfigError), and in linear
    time: the 15 s guard below only catches a hang (a linear version takes
    well under a second; a quadratic one takes minutes)."""
    try:
        out = subprocess.run(
            [sys.executable, "-c", _MANY_GROUPS, "100000"], capture_output=True, text=True, timeout=15
        ).stdout.strip()
    except subprocess.TimeoutExpired:
        pytest.fail(
            "resolve() did not finish in 15 s on a 2 MB /etc/group: "
            "the duplicate check `g not in groups` is quadratic"
        )
    assert out == "ConfigError" or (out.isdigit() and int(out) <= NGROUPS_MAX), out


def test_a_row_with_a_nul_is_no_user() -> None:
    """The sandbox writes its /etc/passwd: a NUL in the home (which becomes
    HOME) would split that string in the exec request, injecting a variable
    and pushing the caller's last one out."""
    passwd = PASSWD + b"evil:x:1500:1500::/home/evil\0LD_PRELOAD=/tmp/x.so:/bin/sh\n"
    with pytest.raises(ConfigError, match="no user 'evil'"):
        resolve("user", "evil", passwd, GROUP)
    assert resolve("user", "1500", passwd, GROUP).home == "/"  # the numeric id still works, without that row
