"""What a sandbox is made of, validated before anything is created: every
bad value raises ConfigError naming the option and the fix, so that a
failure never leaves a half-made sandbox behind."""

from __future__ import annotations

import importlib
import os
import re
import stat
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from . import capabilities
from .errors import ConfigError, HostError
from .sizes import parse_size

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_DISK = "1G"
_HOSTNAME = re.compile(
    r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
CONTAINER_IDS = 65536


@dataclass(frozen=True)
class Mount:
    """A host path bound into the sandbox; read-only unless asked.

    The host files keep their host ownership: files of host root appear as
    nobody inside, and the sandbox writes (with read_only=False) as its
    unprivileged host uid."""

    src: str | os.PathLike[str]
    dst: str
    read_only: bool = True


@dataclass(frozen=True)
class IdMap:
    """Container ids 0..count-1 onto host ids host_start.. (never host 0)."""

    host_start: int
    count: int = CONTAINER_IDS

    def uid_map(self) -> str:
        return f"0 {self.host_start} {self.count}\n"


# idmap=: a range of host ids of its own for each sandbox (the default,
# sandbox/idranges.py), or the one range all sandboxes share (root's in
# /etc/subuid, else 100000:65536)
AUTO_IDS = "auto"
SHARED_IDS = "shared"


@dataclass(frozen=True)
class Secret:
    """A secret's content, kept out of every repr."""

    name: str
    content: bytes = field(repr=False)

    def __repr__(self) -> str:
        return f"Secret({self.name!r}, <{len(self.content)} bytes>)"


@dataclass(frozen=True)
class Spec:
    layers: tuple[str, ...]
    hostname: str
    env: tuple[tuple[str, str], ...]
    workdir: str
    user: str | None
    mounts: tuple[Mount, ...]
    disk: int
    read_only: bool
    idmap: IdMap | str  # or AUTO_IDS: a range leased per launch (sandbox/idranges.py)
    seccomp: bytes | None = field(default=None, repr=False)  # the compiled program
    caps: int = 0  # cap_add, as a bit mask
    secrets: tuple[Secret, ...] = ()
    redact_secrets: bool = False


def check_env(option: str, env: object) -> list[tuple[str, str]]:
    if env is None:
        return []
    if not isinstance(env, Mapping):
        raise ConfigError(option, f"expected a mapping of names to strings, got {type(env).__name__}")
    out = []
    for k, v in env.items():
        if not isinstance(k, str) or not k or "=" in k or "\0" in k:
            raise ConfigError(
                option, f"bad variable name {k!r}: names are non-empty strings without '=' or NUL"
            )
        if not isinstance(v, str) or "\0" in v:
            raise ConfigError(option, f"{k}: the value must be a string without NUL, got {v!r}")
        out.append((k, v))
    return out


def check_argv(argv: object) -> list[str]:
    # a list or a tuple first: the Sequence check is an ABC's (slow, per exec)
    plain = isinstance(argv, (list, tuple))
    if not plain and (isinstance(argv, (str, bytes)) or not isinstance(argv, Sequence)):
        raise ConfigError("argv", f'expected a list of strings such as ["ls", "-l"], got {argv!r}')
    seq = cast("Sequence[object]", argv)
    if not seq:
        raise ConfigError("argv", "is empty: give at least the program to run")
    for i, a in enumerate(seq):
        if not isinstance(a, str) or "\0" in a:
            raise ConfigError(f"argv[{i}]", f"must be a string without NUL, got {a!r}")
    if not seq[0]:
        raise ConfigError("argv[0]", "is empty: name the program to run")
    return cast("list[str]", list(seq))


def check_abs_path(option: str, value: object) -> str:
    if not isinstance(value, (str, os.PathLike)):
        raise ConfigError(option, f"expected a path, got {value!r}")
    s = os.fspath(value)
    if not isinstance(s, str) or not s.startswith("/") or "\0" in s:
        raise ConfigError(option, f"{s!r} is not an absolute path: paths inside the sandbox start with /")
    parts = s.split("/")
    if ".." in parts:
        raise ConfigError(option, f"{s!r} contains '..': give the path without it")
    return "/" + "/".join(p for p in parts if p and p != ".")


def _host_dir(option: str, value: object) -> str:
    if not isinstance(value, (str, os.PathLike)):
        raise ConfigError(option, f"expected a directory path, got {value!r}")
    s = os.fspath(value)
    if not isinstance(s, str) or not os.path.isabs(s):
        raise ConfigError(
            option, f"{s!r} is relative: give an absolute path, e.g. {os.path.abspath(str(s))!r}"
        )
    try:
        st = os.stat(s)
    except OSError:
        st = None
    if st is None or not stat.S_ISDIR(st.st_mode):
        raise ConfigError(option, f"{s!r} does not exist or is not a directory")
    # realpath() costs an lstat per component: kept while both the path and
    # the real path still lead to the same directory (a moved or re-pointed
    # path leads elsewhere)
    hit = _real_dirs.get(s)
    if hit is not None and hit[1:] == (st.st_dev, st.st_ino):
        if hit[0] == s:
            return s  # no symlink on the way: the stat above looked at the real path itself
        try:
            rst = os.stat(hit[0], follow_symlinks=False)
            if (rst.st_dev, rst.st_ino) == hit[1:]:
                return hit[0]
        except OSError:
            pass
    real = os.path.realpath(s)
    if len(_real_dirs) >= 64:
        _real_dirs.clear()
    _real_dirs[s] = (real, st.st_dev, st.st_ino)
    return real


_real_dirs: dict[str, tuple[str, int, int]] = {}


def _check_dst_in_layers(option: str, dst: str, layers: Sequence[str]) -> None:
    """A mount destination must not pass through a symlink of the image: it
    would point somewhere else than the user meant (the init refuses it too)."""
    parts = dst.strip("/").split("/")
    for layer in layers:
        cur = layer
        for p in parts:
            cur = os.path.join(cur, p)
            try:
                st = os.lstat(cur)
            except FileNotFoundError:
                break
            except NotADirectoryError:
                rel = "/" + os.path.relpath(os.path.dirname(cur), layer)
                raise ConfigError(
                    option, f"{dst!r} goes through {rel!r}, a file in the rootfs: mount onto a directory"
                ) from None
            if stat.S_ISLNK(st.st_mode):
                rel = "/" + os.path.relpath(cur, layer)
                raise ConfigError(
                    option,
                    f"{dst!r} goes through the symlink {rel!r} in the rootfs: "
                    "mount onto a real directory (the symlink's target, resolved inside the image)",
                )


_SUBUID = "/etc/subuid"
_idmap_cache: tuple[tuple[int, int], IdMap] | None = None
_idmap_checked = 0.0


IDMAP_RECHECK = 1.0  # seconds


def default_idmap() -> IdMap:
    """The caller's range from /etc/subuid, or 100000:65536 for root.  The
    answer is kept while the file's mtime and size stay the same (reading
    it took ~70 us of each start), and the file is looked at again at most
    once a second (a stat took 20-60 us of a start, most of it waiting to
    retake the interpreter lock from our background threads)."""
    global _idmap_cache, _idmap_checked
    if os.geteuid() != 0:
        raise HostError(
            "sandboxes need root for now: mapping a range of ids as another user needs "
            "newuidmap (the uidmap package), which is not supported yet; run as root"
        )
    now = time.monotonic()
    if _idmap_cache is not None and now - _idmap_checked < IDMAP_RECHECK:
        return _idmap_cache[1]
    _idmap_checked = now
    try:
        st = os.stat(_SUBUID)
        key = (st.st_mtime_ns, st.st_size)
    except OSError:
        key = (0, -1)
    if _idmap_cache is not None and _idmap_cache[0] == key:
        return _idmap_cache[1]
    found = IdMap(100000)
    try:
        for line in Path(_SUBUID).read_text().splitlines():
            name, _, rest = line.partition(":")
            start, _, count = rest.partition(":")
            if name in ("root", "0") and start.isdigit() and count.isdigit():
                if int(start) > 0 and int(count) >= CONTAINER_IDS:
                    found = IdMap(int(start))
                    break
    except OSError:
        pass
    _idmap_cache = (key, found)
    return found


_specs: dict[tuple[object, ...], Spec] = {}
SPECS_MAX = 64


def make_spec(**options: object) -> Spec:
    """The validated Spec for these options (those of `_make_spec`).

    Kept for options given again (a judge's, a test suite's, all alike):
    after idleness, with cold caches, the full validation took ~0.25 ms of
    a 2 ms start here, against ~25 us in a loop.  Kept only for options
    that are plain values and read no file but the rootfs: no mounts, no
    secrets, a built-in profile or none.  The rootfs is looked at again
    every time (`_host_dir`: gone, moved, re-pointed), and so is the
    shared id range (`default_idmap`)."""
    key = _spec_key(options)
    if key is not None:
        hit = _specs.get(key)
        if hit is not None and _still_valid(hit, options):
            return hit
    spec = _make_spec(**options)
    if key is not None:
        if len(_specs) >= SPECS_MAX:
            _specs.clear()
        _specs[key] = spec
    return spec


def forget_specs() -> None:
    """Drop the kept Specs (seccomp.clear_memory_cache: they hold programs)."""
    _specs.clear()


def _spec_key(o: Mapping[str, object]) -> tuple[object, ...] | None:
    """The options as a key, with their types (True is not 1 here); None
    for what is not hashable as given (an env dict, a list of layers...)
    or reads files (a profile path, secrets).  Kept short: after idleness
    every bytecode of a start costs several times its usual."""
    seccomp = o.get("seccomp", "default")
    if seccomp is not None and seccomp not in _BUILTIN_PROFILES:
        return None  # a profile file: compile_profile looks at it every time
    if o.get("secrets") is not None or o.get("mounts"):
        return None
    key = (*o.items(), *map(type, o.values()))
    try:
        hash(key)
    except TypeError:
        return None
    return key


# seccomp.BUILTIN (tests/unit/test_spec.py checks that they agree); not
# imported from there: libseccomp is loaded only when a profile is used
_BUILTIN_PROFILES = ("default", "judge")


def _still_valid(spec: Spec, o: Mapping[str, object]) -> bool:
    rootfs, layers = o.get("rootfs"), o.get("layers")
    lay: tuple[str, ...]
    if rootfs is not None:
        lay = (_host_dir("rootfs", rootfs),)
    elif isinstance(layers, (list, tuple)):
        lay = tuple(_host_dir(f"layers[{i}]", d) for i, d in enumerate(layers))
    else:
        return False
    return lay == spec.layers and (o.get("idmap") != SHARED_IDS or default_idmap() == spec.idmap)


def _make_spec(
    *,
    rootfs: object = None,
    layers: object = None,
    hostname: object = "sandbox",
    env: object = None,
    workdir: object = "/",
    user: object = None,
    mounts: object = (),
    disk: object = DEFAULT_DISK,
    read_only: object = False,
    idmap: object = None,
    seccomp: object = "default",
    cap_add: object = (),
    secrets: object = None,
    redact_secrets: object = False,
    seccomp_log: object = False,
) -> Spec:
    if (rootfs is None) == (layers is None):
        raise ConfigError("rootfs", "give exactly one of rootfs=DIR or layers=[DIR, ...]")
    if rootfs is not None:
        lay = [_host_dir("rootfs", rootfs)]
    else:
        if isinstance(layers, (str, bytes, os.PathLike)) or not isinstance(layers, Sequence) or not layers:
            raise ConfigError("layers", "expected a non-empty list of directories, lowest layer first")
        if len(layers) > 200:
            raise ConfigError("layers", f"{len(layers)} layers: at most 200 are supported")
        lay = [_host_dir(f"layers[{i}]", d) for i, d in enumerate(layers)]
    if not isinstance(hostname, str) or len(hostname) > 64 or not _HOSTNAME.fullmatch(hostname):
        raise ConfigError(
            "hostname", f"{hostname!r} is not a valid host name (letters, digits, '-' and '.', at most 64)"
        )
    envl = check_env("env", env)
    wd = check_abs_path("workdir", workdir)
    if user is not None and (not isinstance(user, (str, int)) or isinstance(user, bool)):
        raise ConfigError("user", f"expected 'name', 'uid' or 'uid:gid', got {user!r}")
    if not isinstance(read_only, bool):
        raise ConfigError("read_only", f"expected True or False, got {read_only!r}")
    if isinstance(mounts, (str, bytes)) or not isinstance(mounts, Sequence):
        raise ConfigError("mounts", "expected a list of Mount(src, dst)")
    ms = []
    for i, m in enumerate(mounts):
        opt = f"mounts[{i}]"
        if not isinstance(m, Mount):
            raise ConfigError(opt, f"expected Mount(src, dst, read_only=True), got {m!r}")
        src = m.src
        if not isinstance(src, (str, os.PathLike)) or not os.path.isabs(os.fspath(src)):
            raise ConfigError(f"{opt}.src", f"{src!r} is not an absolute host path")
        if not os.path.exists(src):
            raise ConfigError(f"{opt}.src", f"{os.fspath(src)!r} does not exist on the host")
        dst = check_abs_path(f"{opt}.dst", m.dst)
        if dst == "/":
            raise ConfigError(f"{opt}.dst", "cannot mount over / : use rootfs= for the root")
        _check_dst_in_layers(f"{opt}.dst", dst, lay[::-1])
        ms.append(Mount(os.path.realpath(src), dst, bool(m.read_only)))
    im: IdMap | str
    if idmap is None or idmap == AUTO_IDS:
        default_idmap()  # its check that we are root
        im = AUTO_IDS
    elif idmap == SHARED_IDS:
        im = default_idmap()
    elif isinstance(idmap, IdMap):
        im = idmap
    else:
        raise ConfigError("idmap", f"expected 'auto', 'shared' or IdMap(host_start), got {idmap!r}")
    if isinstance(im, IdMap):
        if im.host_start <= 0 or im.count < 1 or im.host_start + im.count > 2**32 - 1:
            raise ConfigError("idmap", f"host ids {im.host_start}..+{im.count}: the range must start above 0")
        if im.host_start <= os.geteuid() < im.host_start + im.count:
            raise ConfigError("idmap", "the range holds the caller's own uid: pick a range of unused ids")
    caps, cap_names = capabilities.mask("cap_add", cap_add)  # type: ignore[arg-type]
    if seccomp is None:
        prog = None
    else:
        # libseccomp is loaded only when a profile is used
        _seccomp = importlib.import_module(".seccomp", __package__)
        if not isinstance(seccomp_log, bool):
            raise ConfigError("seccomp_log", f"expected True or False, got {seccomp_log!r}")
        # log mode, for writing profiles: what the profile would deny runs, and
        # the kernel logs it (audit type 1326 in the kernel log)
        prog = _seccomp.compile_profile(seccomp, cap_add=cap_names, log=seccomp_log)
    if not isinstance(redact_secrets, bool):
        raise ConfigError("redact_secrets", f"expected True or False, got {redact_secrets!r}")
    return Spec(
        layers=tuple(lay),
        hostname=hostname,
        env=tuple(envl),
        workdir=wd,
        user=str(user) if user is not None else None,
        mounts=tuple(ms),
        disk=parse_size("disk", disk, minimum=1 << 20),
        read_only=read_only,
        idmap=im,
        seccomp=prog,
        caps=caps,
        secrets=check_secrets(secrets),
        redact_secrets=redact_secrets,
    )


_SECRET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
SECRET_MAX = 1 << 20  # bytes per secret: they travel in the launch plan


def check_secrets(secrets: object) -> tuple[Secret, ...]:
    """{"name": bytes | str | Path}: a Path is read here, once, into memory."""
    if secrets is None:
        return ()
    if not isinstance(secrets, Mapping):
        raise ConfigError("secrets", "expected a mapping of names to bytes, str or Path")
    out = []
    for name, value in secrets.items():
        opt = f"secrets[{name!r}]"
        if not isinstance(name, str) or not _SECRET_NAME.fullmatch(name):
            raise ConfigError(opt, "a secret's name is a file name: letters, digits, '.', '_', '-'")
        if isinstance(value, str):
            data = value.encode()
        elif isinstance(value, (bytes, bytearray)):
            data = bytes(value)
        elif isinstance(value, Path):
            try:
                data = value.read_bytes()
            except OSError as e:
                raise ConfigError(opt, f"cannot read {str(value)!r}: {e.strerror}") from None
        else:
            raise ConfigError(opt, f"expected bytes, str or pathlib.Path, got {type(value).__name__}")
        if len(data) > SECRET_MAX:
            raise ConfigError(opt, f"{len(data)} bytes: at most {SECRET_MAX} per secret")
        out.append(Secret(name, data))
    return tuple(out)
