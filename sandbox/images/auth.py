"""Registry authentication: the WWW-Authenticate challenge of a 401, then
HTTP Basic with stored credentials, or the Bearer token flow (the realm,
asked with service and scope, gives a token)."""

from __future__ import annotations

import base64
import json
import re
import urllib.parse

from .errors import RegistryError
from .http import Http, read_limited

_PARAM = re.compile(r'([A-Za-z_]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]+))')
TOKEN_MAX = 1 << 20


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """'Bearer realm="...",service="..."' -> ("bearer", {"realm": ..., ...})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {
        m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3))
        for m in _PARAM.finditer(rest)
    }
    return scheme.lower(), params


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def bearer_token(
    http: Http, params: dict[str, str], scope: str, creds: tuple[str, str] | None, registry_url: str
) -> str:
    realm = params.get("realm")
    if not realm or not realm.startswith(("https://", "http://")):
        raise RegistryError(f"{registry_url}: a Bearer challenge without a usable realm ({realm!r})")
    if realm.startswith("http://") and registry_url.startswith("https://"):
        raise RegistryError(f"{registry_url}: refusing a plain-HTTP token realm {realm!r} for a TLS registry")
    q = {"scope": scope}
    if "service" in params:
        q["service"] = params["service"]
    url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(q)
    resp = http.open("GET", url, {"Accept": "application/json"}, basic(*creds) if creds else None)
    try:
        body = read_limited(resp, TOKEN_MAX, "token")
    finally:
        resp.close()
    if resp.status == 401:
        raise RegistryError(f"{registry_url}: the token server refused the credentials (401)")
    if resp.status != 200:
        raise RegistryError(f"{registry_url}: the token server answered {resp.status}")
    try:
        data = json.loads(body)
        tok = data.get("token") or data.get("access_token")
    except (ValueError, AttributeError):
        tok = None
    if not isinstance(tok, str) or not tok or any(c.isspace() for c in tok):
        raise RegistryError(f"{registry_url}: the token server sent no usable token")
    return "Bearer " + tok
