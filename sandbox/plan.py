"""The launch plan: a flat, versioned list of operations that the init runs
in order before it serves requests (mirrors `struct sbx_plan_hdr` and
`struct sbx_op_hdr` in _cext/proto.h).  This module only encodes; what goes
in the plan is decided by `sandbox.layout`."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

MAGIC = 0x50584253
VERSION = 6  # = SBX_ABI_VERSION

HDR = struct.Struct("=IIII")  # magic, version, nops, nfds
OP = struct.Struct("=HHIQII")  # type, nstr, len, a, flags, pad

OP_MOUNT = 1
OP_MKDIR = 2
OP_WRITE = 3
OP_SYMLINK = 4
OP_ATTACH = 5
OP_PIVOT = 6
OP_HOSTNAME = 7
OP_CHDIR = 8
OP_REMOUNT = 9
OP_MKFILE = 10
OP_MKDIR_SAFE = 11
OP_ROOT = 12
OP_SECCOMP = 13
OP_SECRET = 14
OP_CAPBSET = 15
SECRET = struct.Struct("=IIII")  # mode, uid, gid, len (struct sbx_secret)

F_OPTIONAL = 1
F_INHERIT = 2  # = SBX_F_INHERIT
F_NOTIFY = 4  # = SBX_F_NOTIFY

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18


@dataclass
class Plan:
    """Operations in order; `nfds` detached trees are waiting at fds 4...

    Paths: relative ones resolve against the staging directory; absolute
    ones, after `root()`, inside the new root (never outside it)."""

    nfds: int = 0
    _ops: list[bytes] = field(default_factory=list)

    def _add(self, op: int, *strings: str, a: int = 0, flags: int = 0) -> None:
        body = b"".join(s.encode() + b"\0" for s in strings)
        size = OP.size + len(body)
        size += -size % 8
        rec = OP.pack(op, len(strings), size, a, flags, 0) + body
        self._ops.append(rec.ljust(size, b"\0"))

    def mount(
        self,
        source: str,
        target: str,
        fstype: str = "",
        flags: int = 0,
        data: str = "",
        optional: bool = False,
    ) -> None:
        self._add(OP_MOUNT, source, target, fstype, data, a=flags, flags=F_OPTIONAL if optional else 0)

    def mkdir(self, path: str, mode: int = 0o755, optional: bool = False) -> None:
        self._add(OP_MKDIR, path, a=mode, flags=F_OPTIONAL if optional else 0)

    def mkdir_safe(self, path: str) -> None:
        self._add(OP_MKDIR_SAFE, path)

    def write(self, path: str, content: str, mode: int = 0o644, optional: bool = False) -> None:
        self._add(OP_WRITE, path, content, a=mode, flags=F_OPTIONAL if optional else 0)

    def mkfile(self, path: str, mode: int = 0o644, optional: bool = False) -> None:
        self._add(OP_MKFILE, path, a=mode, flags=F_OPTIONAL if optional else 0)

    def symlink(self, target: str, linkpath: str) -> None:
        self._add(OP_SYMLINK, target, linkpath, flags=F_OPTIONAL)

    def attach(self, index: int, target: str) -> None:
        self._add(OP_ATTACH, target, a=index)

    def root(self, path: str) -> None:
        self._add(OP_ROOT, path)

    def pivot(self, path: str) -> None:
        self._add(OP_PIVOT, path)

    def hostname(self, name: str) -> None:
        self._add(OP_HOSTNAME, name)

    def chdir(self, path: str) -> None:
        self._add(OP_CHDIR, path)

    def remount(self, path: str, flags: int, optional: bool = False) -> None:
        """A bind remount of the mount at `path`: of MS_RDONLY, MS_NOSUID,
        MS_NODEV and MS_NOEXEC (no other flag), those in `flags` are set and
        the others cleared (the init does it with mount_setattr)."""
        self._add(OP_REMOUNT, path, a=flags, flags=F_OPTIONAL if optional else 0)

    def _add_binary(self, op: int, payload: bytes, flags: int = 0) -> None:
        size = OP.size + len(payload)
        size += -size % 8
        self._ops.append((OP.pack(op, 0, size, len(payload), flags, 0) + payload).ljust(size, b"\0"))

    def capbset(self, keep: int) -> None:
        """The init's bounding set becomes `keep` (bit N: capability N), once
        for every exec to come."""
        self._add(OP_CAPBSET, a=keep)

    def seccomp(self, program: bytes, inherit: bool = False, notify: bool = False) -> None:
        """The BPF program every exec loads last before execve; with
        `inherit`, the init loads it once at the end of its setup instead
        (and with `notify`, takes the notifications of its kill actions)."""
        flags = (F_INHERIT if inherit else 0) | (F_NOTIFY if inherit and notify else 0)
        self._add_binary(OP_SECCOMP, program, flags)

    def secret(self, path: str, content: bytes, mode: int, uid: int, gid: int) -> None:
        """A file made from memory, never from a file on the host."""
        self._add_binary(
            OP_SECRET, SECRET.pack(mode, uid, gid, len(content)) + content + path.encode() + b"\0"
        )

    def encode(self, extra: Plan | None = None) -> bytes:
        """The plan, followed by the operations of `extra` (kept apart so that
        a cached plan never holds per-sandbox data such as secrets)."""
        ops = self._ops + (extra._ops if extra else [])
        return HDR.pack(MAGIC, VERSION, len(ops), self.nfds) + b"".join(ops)

    def __repr__(self) -> str:
        # never the bytes: a plan can carry secrets
        return f"<Plan {len(self._ops)} operations, {self.nfds} trees>"

    def __len__(self) -> int:
        return len(self._ops)
