"""OCI / Docker schema2 manifests, indexes and image configs, parsed with
bounds: they come from the registry and are untrusted."""

from __future__ import annotations

import json
import platform as _platform
import re
from dataclasses import dataclass

from ..errors import ConfigError
from .errors import ImageError, PlatformNotFound

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_SCHEMA1 = (
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
)
INDEXES = (OCI_INDEX, DOCKER_LIST)
MANIFESTS = (OCI_MANIFEST, DOCKER_MANIFEST)
ACCEPT = ", ".join((OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST))
LAYER_TYPES = {
    "application/vnd.oci.image.layer.v1.tar": "none",
    "application/vnd.oci.image.layer.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd": "zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "gzip",
    "application/vnd.docker.image.rootfs.diff.tar": "none",
}
MANIFEST_MAX = 4 << 20
CONFIG_MAX = 8 << 20
LAYERS_MAX = 500
DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")
# OS/ARCH[/VARIANT]: what the platform= option takes, and what an image's
# config may say (it is printed: no room for a terminal escape)
PLATFORM = re.compile(r"[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?")


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: str | None = None  # "os/arch[/variant]", in indexes


@dataclass(frozen=True)
class ImageConfig:
    diff_ids: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    entrypoint: tuple[str, ...] | None
    cmd: tuple[str, ...] | None
    workdir: str | None
    user: str | None
    platform: str


def _descriptor(d: object, where: str) -> Descriptor:
    if not isinstance(d, dict):
        raise ImageError(f"{where}: a descriptor is not an object")
    mt, dg, size = d.get("mediaType", ""), d.get("digest"), d.get("size")
    if not isinstance(mt, str) or not isinstance(dg, str) or not DIGEST.fullmatch(dg):
        raise ImageError(f"{where}: a descriptor without a sha256 digest ({str(dg)[:80]!r})")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0 or size > 1 << 40:
        raise ImageError(f"{where}: descriptor {dg} has a bad size {size!r}")
    plat = None
    p = d.get("platform")
    if isinstance(p, dict):
        parts = [p.get("os"), p.get("architecture"), p.get("variant")]
        plat = "/".join(str(x) for x in parts if isinstance(x, str) and x)
    return Descriptor(mt, dg, size, plat)


def loads(body: bytes, where: str) -> dict[str, object]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ImageError(f"{where}: not valid JSON") from None
    except RecursionError:  # untrusted: arrays nested deeper than the parser's stack
        raise ImageError(f"{where}: JSON nested too deeply") from None
    if not isinstance(data, dict):
        raise ImageError(f"{where}: not a JSON object")
    return data


def media_type(data: dict[str, object], header: str | None) -> str:
    """The manifest's type: its own field, else the Content-Type, else its shape
    (umoci's manifests have no mediaType)."""
    mt = data.get("mediaType")
    if isinstance(mt, str) and mt:
        return mt
    if header and header.split(";")[0].strip() in INDEXES + MANIFESTS:
        return header.split(";")[0].strip()
    return OCI_INDEX if "manifests" in data else OCI_MANIFEST


def index_entries(data: dict[str, object], where: str) -> list[Descriptor]:
    ms = data.get("manifests")
    if not isinstance(ms, list) or len(ms) > 1000:
        raise ImageError(f"{where}: an index without a manifests list")
    return [_descriptor(m, where) for m in ms]


def manifest_parts(data: dict[str, object], where: str) -> tuple[Descriptor, list[Descriptor]]:
    layers = data.get("layers")
    if not isinstance(layers, list) or len(layers) > LAYERS_MAX:
        raise ImageError(f"{where}: a manifest needs a list of at most {LAYERS_MAX} layers")
    descs = [_descriptor(x, where) for x in layers]
    for d in descs:
        if d.media_type not in LAYER_TYPES:
            raise ImageError(f"{where}: layer {d.digest} has an unsupported media type {d.media_type!r}")
    return _descriptor(data.get("config"), where), descs


def host_platform() -> str:
    m = _platform.machine()
    arch = {"x86_64": "amd64", "aarch64": "arm64/v8", "armv7l": "arm/v7", "i686": "386"}.get(m, m)
    return f"linux/{arch}"


def check_platform(value: object) -> str:
    if not isinstance(value, str) or not PLATFORM.fullmatch(value):
        raise ConfigError(
            "platform", f"{value!r}: write OS/ARCH[/VARIANT], e.g. linux/amd64 or linux/arm64/v8"
        )
    return value


def shown(platform: str) -> str:
    """A platform from a registry, for a message: as it is when well formed, else quoted."""
    return platform if PLATFORM.fullmatch(platform) else repr(platform)


def _norm(p: str) -> tuple[str, str, str]:
    parts = ([*p.split("/"), "", ""])[:3]
    os_, arch, variant = parts
    if arch == "arm64" and not variant:
        variant = "v8"  # arm64's only variant, often left out
    return os_, arch, variant


def select(entries: list[Descriptor], want: str, where: str) -> Descriptor:
    """The index entry for platform `want`; without a variant asked, any variant matches."""
    w_os, w_arch, w_var = _norm(want)
    explicit_variant = want.count("/") == 2
    for e in entries:
        if e.media_type not in (*MANIFESTS, "") or not e.platform:
            continue
        os_, arch, var = _norm(e.platform)
        if (os_, arch) == (w_os, w_arch) and (not explicit_variant or var == w_var):
            return e
    offered = ", ".join(
        sorted({shown(e.platform) for e in entries if e.platform and not e.platform.startswith("unknown")})
    )
    raise PlatformNotFound(
        f"{where}: no image for platform {want}; the index offers: {offered or 'none'} "
        "(choose one with platform=...)"
    )


def _strings(v: object, where: str) -> tuple[str, ...] | None:
    if v is None:
        return None
    if not isinstance(v, list) or not all(isinstance(s, str) and "\0" not in s for s in v):
        raise ImageError(f"{where}: expected a list of strings")
    return tuple(v)


def parse_config(body: bytes, where: str) -> ImageConfig:
    data = loads(body, where)
    rootfs = data.get("rootfs")
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or not all(
        isinstance(d, str) and DIGEST.fullmatch(d) for d in diff_ids
    ):
        raise ImageError(f"{where}: the config has no list of sha256 diff_ids")
    c = data.get("config") or {}
    if not isinstance(c, dict):
        raise ImageError(f"{where}: 'config' is not an object")
    env = []
    for kv in _strings(c.get("Env"), f"{where}: Env") or ():
        k, sep, v = kv.partition("=")
        if sep and k:
            env.append((k, v))
    wd, user = c.get("WorkingDir"), c.get("User")
    parts = [data.get("os"), data.get("architecture"), data.get("variant")]
    plat = "/".join(str(x) for x in parts if x)
    if plat and not PLATFORM.fullmatch(plat):
        raise ImageError(f"{where}: the config's os/architecture/variant {plat!r} is not a platform")
    return ImageConfig(
        diff_ids=tuple(diff_ids),
        env=tuple(env),
        entrypoint=_strings(c.get("Entrypoint"), f"{where}: Entrypoint"),
        cmd=_strings(c.get("Cmd"), f"{where}: Cmd"),
        workdir=wd if isinstance(wd, str) and wd.startswith("/") and "\0" not in wd else None,
        user=user if isinstance(user, str) and user and "\0" not in user else None,
        platform=plat,
    )
