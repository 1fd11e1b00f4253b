"""Image references, parsed and normalised as Docker does:

    debian                     docker.io/library/debian:latest
    debian:bookworm            docker.io/library/debian:bookworm
    user/app                   docker.io/user/app:latest
    ghcr.io/x/y@sha256:<hex>   ghcr.io/x/y@sha256:<hex>
    127.0.0.1:5000/img:1       127.0.0.1:5000/img:1

The first component is a registry host when it has a '.' or a ':' or is
`localhost` (Docker's rule); otherwise the image is on Docker Hub, where a
one-component name lives under `library/`."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import ConfigError

DOCKER_HUB = "docker.io"
DOCKER_HUB_ALIASES = ("index.docker.io", "registry-1.docker.io")
_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")
_HOST = re.compile(
    r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
    r"|\[[0-9a-fA-F:.]+\])(?::[0-9]{1,5})?$"
)
MAX_LENGTH = 255 + 128 + 72  # name, tag and digest at their longest


@dataclass(frozen=True)
class Reference:
    registry: str  # host[:port]; "docker.io" for Docker Hub
    repository: str  # "library/debian"
    tag: str | None  # None when pinned by digest only
    digest: str | None  # "sha256:..." or None

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"

    def __str__(self) -> str:
        s = self.name
        if self.tag is not None:
            s += f":{self.tag}"
        if self.digest is not None:
            s += f"@{self.digest}"
        return s

    @property
    def lookup(self) -> str:
        """What to ask the registry's manifests endpoint for."""
        return self.digest or self.tag or "latest"

    def familiar(self) -> str:
        """The short form Docker shows: `debian:bookworm`, `user/app:1`."""
        s = str(self)
        if self.registry == DOCKER_HUB:
            s = s[len(DOCKER_HUB) + 1 :]
            if s.startswith("library/") and "/" not in s[8:].split(":")[0].split("@")[0]:
                s = s[8:]
        return s


def parse(ref: object, option: str = "image") -> Reference:
    """A normalised Reference; ConfigError naming `option` when it is invalid."""
    if not isinstance(ref, str):
        raise ConfigError(option, f"expected an image reference such as 'debian:bookworm', got {ref!r}")
    if not ref or len(ref) > MAX_LENGTH or any(c.isspace() or c == "\0" for c in ref):
        raise ConfigError(option, f"{ref!r} is not an image reference: write NAME[:TAG][@sha256:DIGEST]")
    rest, at, digest = ref.partition("@")
    if at:
        if not _DIGEST.fullmatch(digest):
            raise ConfigError(
                option, f"{ref!r}: the digest must be sha256: and 64 lowercase hex digits, got {digest!r}"
            )
    tag = None
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1 :]
        if not _TAG.fullmatch(tag):
            raise ConfigError(
                option, f"{ref!r}: bad tag {tag!r} (letters, digits, '_', '.', '-'; at most 128)"
            )
    first, sep, remainder = rest.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        if not _HOST.fullmatch(first):
            raise ConfigError(option, f"{ref!r}: {first!r} is not a registry host[:port]")
        registry, path = first, remainder
    else:
        registry, path = DOCKER_HUB, rest
    if registry in DOCKER_HUB_ALIASES:
        registry = DOCKER_HUB
    if registry == DOCKER_HUB and "/" not in path:
        path = "library/" + path
    parts = path.split("/")
    for p in parts:
        if not _COMPONENT.fullmatch(p):
            hint = " (names are lowercase)" if p.lower() != p else ""
            raise ConfigError(option, f"{ref!r}: bad name component {p!r}{hint}")
    if tag is None and not at:
        tag = "latest"
    return Reference(registry, path, tag, digest if at else None)
