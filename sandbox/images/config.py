"""Registry settings: mirrors of Docker Hub, registries reached over plain
HTTP, a CA file, and credentials.

Read from the environment, then from a JSON file (`$SANDBOX_REGISTRY_CONFIG`,
default `$SANDBOX_HOME/registries.json` or `/etc/sandbox/registries.json`)::

    {"mirrors": ["https://mirror.example"], "insecure": ["127.0.0.1:5000"],
     "ca_file": "/etc/ssl/my-ca.pem"}

- `SANDBOX_REGISTRY_MIRRORS`: mirror URLs for docker.io, comma separated,
  tried in order before Docker Hub (like Docker's registry-mirrors); a mirror
  given as http:// is reached over plain HTTP.
- `SANDBOX_REGISTRY_MIRRORS_ONLY=1`: never fall back to Docker Hub itself.
- `SANDBOX_INSECURE_REGISTRIES`: host[:port] reached over plain HTTP.
- `SANDBOX_REGISTRY_CA`: a PEM file of extra CAs (the system's stay trusted).
- credentials: `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`
  (`auths.HOST.auth`, base64 "user:password", or `username`/`password`).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError
from .reference import DOCKER_HUB

HUB_ENDPOINT = "https://registry-1.docker.io"


def sandbox_home() -> Path:
    home = os.environ.get("SANDBOX_HOME")
    if home:
        return Path(home)
    if os.geteuid() == 0:
        return Path("/var/lib/sandbox")
    data = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return Path(data) / "sandbox"


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.replace(" ", ",").split(",") if v.strip()]


@dataclass(frozen=True)
class RegistryConfig:
    mirrors: tuple[str, ...] = ()
    mirrors_only: bool = False
    insecure: frozenset[str] = frozenset()
    ca_file: str | None = None
    auths: dict[str, tuple[str, str]] = field(default_factory=dict, repr=False)

    def endpoints(self, registry: str) -> list[str]:
        """Base URLs to try for `registry`, in order."""
        if registry == DOCKER_HUB:
            out = list(self.mirrors)
            if not (self.mirrors and self.mirrors_only):
                out.append(HUB_ENDPOINT)
            return out
        scheme = "http" if registry in self.insecure else "https"
        return [f"{scheme}://{registry}"]

    def credentials(self, host: str) -> tuple[str, str] | None:
        for key in (host, f"https://{host}", f"http://{host}", f"https://{host}/v1/"):
            if key in self.auths:
                return self.auths[key]
        if host in ("registry-1.docker.io", "docker.io", "index.docker.io"):
            return self.auths.get("https://index.docker.io/v1/") or self.auths.get("docker.io")
        return None


def _file_config() -> dict[str, object]:
    path = os.environ.get("SANDBOX_REGISTRY_CONFIG")
    candidates = (
        [Path(path)] if path else [sandbox_home() / "registries.json", Path("/etc/sandbox/registries.json")]
    )
    for p in candidates:
        try:
            data = json.loads(p.read_text())
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as e:
            raise ConfigError("SANDBOX_REGISTRY_CONFIG", f"cannot read {str(p)!r}: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError("SANDBOX_REGISTRY_CONFIG", f"{str(p)!r}: expected a JSON object")
        return data
    return {}


def _docker_auths() -> dict[str, tuple[str, str]]:
    d = os.environ.get("DOCKER_CONFIG") or os.path.expanduser("~/.docker")
    try:
        data = json.loads((Path(d) / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    out = {}
    auths = data.get("auths") if isinstance(data, dict) else None
    for host, entry in (auths or {}).items():
        if not isinstance(entry, dict):
            continue
        user, pw = entry.get("username"), entry.get("password")
        if isinstance(entry.get("auth"), str):
            try:
                user, _, pw = base64.b64decode(entry["auth"]).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                continue
        if isinstance(user, str) and isinstance(pw, str) and user:
            out[host] = (user, pw)
    return out


def _mirror(url: str, option: str) -> str:
    if not url.startswith(("https://", "http://")):
        raise ConfigError(option, f"mirror {url!r}: give a URL such as https://mirror.example")
    return url.rstrip("/")


def load() -> RegistryConfig:
    f = _file_config()
    env = os.environ
    mirrors = [
        _mirror(m, "SANDBOX_REGISTRY_MIRRORS") for m in _split(env.get("SANDBOX_REGISTRY_MIRRORS", ""))
    ]
    fm = f.get("mirrors", [])
    insecure = set(_split(env.get("SANDBOX_INSECURE_REGISTRIES", "")))
    fi = f.get("insecure", [])
    if not isinstance(fm, list) or not isinstance(fi, list):
        raise ConfigError("SANDBOX_REGISTRY_CONFIG", '"mirrors" and "insecure" are lists of strings')
    mirrors += [_mirror(str(m), "mirrors") for m in fm]
    insecure |= {str(i) for i in fi}
    ca = env.get("SANDBOX_REGISTRY_CA") or f.get("ca_file")
    if ca is not None and (not isinstance(ca, str) or not os.path.isfile(ca)):
        raise ConfigError("SANDBOX_REGISTRY_CA", f"{ca!r} is not a readable PEM file")
    return RegistryConfig(
        mirrors=tuple(mirrors),
        mirrors_only=env.get("SANDBOX_REGISTRY_MIRRORS_ONLY") == "1" or f.get("mirrors_only") is True,
        insecure=frozenset(insecure),
        ca_file=ca,
        auths=_docker_auths(),
    )
