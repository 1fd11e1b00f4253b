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


def needs_lookup(spec: str | None) -> bool:
    if spec is None:
        return False
    return not all(p.isdigit() for p in spec.split(":", 1))


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
        if len(f) >= width and not line.startswith("#"):
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
    if uname.isdigit():
        uid = _id(option, uname)
        gid = uid
        for f in pw:
            if f[2] == uname and f[3].isdigit():
                gid, home = _id(option, f[3]), f[5] or "/"
                break
        name = next((f[0] for f in pw if f[2] == uname), None)
    else:
        row = next((f for f in pw if f[0] == uname), None)
        if row is None or not row[2].isdigit() or not row[3].isdigit():
            raise ConfigError(
                option,
                f"no user {uname!r} in the sandbox's /etc/passwd: give a numeric uid:gid or create the user",
            )
        uid, gid, home, name = _id(option, row[2]), _id(option, row[3]), row[5] or "/", uname
    if gname:
        if gname.isdigit():
            gid = _id(option, gname)
        else:
            grow = next((f for f in gr if f[0] == gname), None)
            if grow is None or not grow[2].isdigit():
                raise ConfigError(option, f"no group {gname!r} in the sandbox's /etc/group")
            gid = _id(option, grow[2])
    groups = [gid]
    if name is not None:
        for f in gr:
            if name in f[3].split(",") and f[2].isdigit():
                g = _id(option, f[2])
                if g not in groups:
                    groups.append(g)
    if uid == 0 and home == "/":
        home = "/root"
    return User(uid, gid, tuple(groups), home)
