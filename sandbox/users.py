"""Exec users: "uid", "uid:gid", "name" or "name:group", looked up in the
sandbox's own /etc/passwd and /etc/group (image content: untrusted, parsed
with bounds, never evaluated)."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError

MAX_ID = 2**32 - 2
MAX_DB = 4 << 20  # bytes of passwd/group we are willing to parse


@dataclass(frozen=True)
class User:
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str


ROOT = User(0, 0, (), "/root")


MAX_GROUPS = 65536  # the kernel's NGROUPS_MAX


def is_num(text: str) -> bool:
    """ASCII digits only: str.isdigit() also takes superscript and non-Latin digits, which int()
    then refuses or reads as another number."""
    return text.isascii() and text.isdigit()


def needs_lookup(spec: str | None) -> bool:
    if spec is None:
        return False
    return not all(is_num(p) for p in spec.split(":", 1))


def _id(option: str, text: str) -> int:
    n = int(text)
    if n > MAX_ID:
        raise ConfigError(option, f"id {n} is out of range (0..{MAX_ID})")
    return n


def _rows(data: bytes | None, width: int) -> list[list[str]]:
    if not data:
        return []
    rows = []
    for line in data[:MAX_DB].decode("utf-8", "replace").splitlines():
        f = line.split(":")
        # the sandbox wrote these files: a NUL in a field (the home, which
        # becomes HOME) would end that string in the exec request early and
        # start another (an injected variable); such a row is no user
        if len(f) >= width and not line.startswith("#") and "\0" not in line:
            rows.append(f)
    return rows


def resolve(option: str, spec: str | None, passwd: bytes | None = None, group: bytes | None = None) -> User:
    if spec is None:
        return ROOT
    if not spec or spec.count(":") > 1:
        raise ConfigError(option, f"{spec!r}: expected 'name', 'uid', 'uid:gid' or 'name:group'")
    uname, _, gname = spec.partition(":")
    pw = _rows(passwd, 7)
    gr = _rows(group, 4)
    home = "/"
    if is_num(uname):
        uid = _id(option, uname)
        gid = uid
        for f in pw:
            if f[2] == uname and is_num(f[3]):
                gid, home = _id(option, f[3]), f[5] or "/"
                break
        name = next((f[0] for f in pw if f[2] == uname), None)
    else:
        row = next((f for f in pw if f[0] == uname), None)
        if row is None or not is_num(row[2]) or not is_num(row[3]):
            raise ConfigError(
                option,
                f"no user {uname!r} in the sandbox's /etc/passwd: give a numeric uid:gid or create the user",
            )
        uid, gid, home, name = _id(option, row[2]), _id(option, row[3]), row[5] or "/", uname
    if gname:
        if is_num(gname):
            gid = _id(option, gname)
        else:
            grow = next((f for f in gr if f[0] == gname), None)
            if grow is None or not is_num(grow[2]):
                raise ConfigError(option, f"no group {gname!r} in the sandbox's /etc/group")
            gid = _id(option, grow[2])
    groups = [gid]
    seen = {gid}
    if name is not None:
        for f in gr:
            if is_num(f[2]) and name in f[3].split(","):
                g = _id(option, f[2])
                if g not in seen:
                    seen.add(g)
                    groups.append(g)
                    if len(groups) > MAX_GROUPS:
                        raise ConfigError(
                            option,
                            f"{name!r} is in more than {MAX_GROUPS} groups in the "
                            "sandbox's /etc/group: the kernel allows no more",
                        )
    if uid == 0 and home == "/":
        home = "/root"
    return User(uid, gid, tuple(groups), home)
