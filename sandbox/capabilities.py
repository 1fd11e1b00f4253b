"""Capability names, for `cap_add`.  By default a command holds none: empty
bounding, effective, permitted, inheritable and ambient sets, and
no_new_privs, whatever its uid inside the sandbox."""

from __future__ import annotations

from collections.abc import Iterable

from .errors import ConfigError

# include/uapi/linux/capability.h
NAMES = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
    "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
    "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
    "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD",
    "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
    "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
)  # fmt: skip
NUMBERS = {f"CAP_{n}": i for i, n in enumerate(NAMES)}


def mask(option: str, names: Iterable[str]) -> tuple[int, tuple[str, ...]]:
    """The bit mask for names like "CAP_NET_BIND_SERVICE" (or without the
    prefix), and the normalised names."""
    if isinstance(names, str):
        raise ConfigError(option, f"expected a list of capability names, got the string {names!r}")
    bits, out = 0, []
    for n in names:
        if not isinstance(n, str):
            raise ConfigError(option, f"expected capability names, got {n!r}")
        full = n.upper() if n.upper().startswith("CAP_") else "CAP_" + n.upper()
        if full not in NUMBERS:
            raise ConfigError(option, f"unknown capability {n!r}: names are like CAP_NET_BIND_SERVICE")
        bits |= 1 << NUMBERS[full]
        out.append(full)
    return bits, tuple(sorted(set(out)))
