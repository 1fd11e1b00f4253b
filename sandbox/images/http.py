"""A small HTTP/1.1 client over http.client, for registries: TLS with the
system CAs plus an optional CA file, redirects that never carry the
Authorization header to another origin, and retries with backoff on 5xx,
429 and broken connections.  One connection per request: a pull makes a
handful of requests, and a fresh connection never inherits a half-read
answer."""

from __future__ import annotations

import http.client
import socket
import ssl
import time
import urllib.parse
from collections.abc import Callable, Mapping

from .errors import RegistryError

TIMEOUT = 30.0  # seconds of silence on a connection before it counts as broken
RETRIES = 5
BACKOFF = 0.1  # seconds, doubled per attempt
BACKOFF_MAX = 4.0
MAX_REDIRECTS = 5
# What counts as a broken connection (retried); certificate errors are not.
NETWORK_ERRORS = (ConnectionError, TimeoutError, socket.timeout, http.client.HTTPException, socket.gaierror)


def backoff(attempt: int, sleep: Callable[[float], None] = time.sleep) -> None:
    sleep(min(BACKOFF_MAX, BACKOFF * (2**attempt)))


def origin(url: str) -> tuple[str, str]:
    u = urllib.parse.urlsplit(url)
    return u.scheme, u.netloc


class Http:
    def __init__(self, ca_file: str | None = None) -> None:
        self.ctx = ssl.create_default_context()
        if ca_file:
            self.ctx.load_verify_locations(ca_file)

    def open(
        self, method: str, url: str, headers: Mapping[str, str], auth: str | None = None
    ) -> http.client.HTTPResponse:
        """One request, redirects followed; `auth` (an Authorization value)
        goes to the first origin only.  Raises the NETWORK_ERRORS as they come."""
        first = origin(url)
        for _ in range(MAX_REDIRECTS + 1):
            u = urllib.parse.urlsplit(url)
            if u.scheme not in ("http", "https") or not u.hostname:
                raise RegistryError(f"refusing to follow {url!r}: only http(s) URLs are fetched")
            conn: http.client.HTTPConnection
            if u.scheme == "https":
                conn = http.client.HTTPSConnection(u.hostname, u.port, timeout=TIMEOUT, context=self.ctx)
            else:
                conn = http.client.HTTPConnection(u.hostname, u.port, timeout=TIMEOUT)
            # Connection: close hands the socket to the response, which closes it
            h = {**headers, "Connection": "close"}
            if auth is not None and origin(url) == first:
                h["Authorization"] = auth
            path = (u.path or "/") + (f"?{u.query}" if u.query else "")
            try:
                conn.request(method, path, headers=h)
                resp = conn.getresponse()
            except ssl.SSLCertVerificationError as e:
                conn.close()
                raise RegistryError(
                    f"{u.netloc}: TLS certificate not trusted ({e.verify_message}); "
                    "give its CA with SANDBOX_REGISTRY_CA=FILE, or mark the registry insecure "
                    "(SANDBOX_INSECURE_REGISTRIES) if it speaks plain HTTP"
                ) from None
            except BaseException:
                conn.close()
                raise
            if resp.status in (301, 302, 303, 307, 308) and resp.getheader("Location"):
                url = urllib.parse.urljoin(url, resp.getheader("Location", ""))
                resp.read(65536)
                resp.close()
                if resp.status == 303:
                    method = "GET"
                continue
            return resp
        raise RegistryError(f"too many redirects from {url!r}")


def read_limited(resp: http.client.HTTPResponse, limit: int, what: str) -> bytes:
    """The whole body, refusing more than `limit` bytes."""
    data = resp.read(limit + 1)
    if len(data) > limit:
        raise RegistryError(f"{what}: the registry sent more than {limit} bytes")
    return data
