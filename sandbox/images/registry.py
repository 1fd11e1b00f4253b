"""A client of one registry endpoint for one repository (OCI distribution
spec): manifests with the Accept header the registry needs, blobs streamed
to a file with their digest and size checked, resumed with Range after a
broken connection, and the 401 challenge answered once per client."""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.parse
from collections.abc import Callable

from . import auth
from .config import RegistryConfig
from .errors import DigestMismatch, ImageNotFound, RegistryError
from .http import NETWORK_ERRORS, RETRIES, Http, backoff, read_limited
from .manifest import ACCEPT, MANIFEST_MAX

CHUNK = 1 << 20
Progress = Callable[[int], None]  # bytes received so far


class Client:
    def __init__(self, base: str, repository: str, cfg: RegistryConfig, http: Http | None = None) -> None:
        self.base = base.rstrip("/")
        self.repo = repository
        self.cfg = cfg
        self.http = http or Http(cfg.ca_file)
        self.host = urllib.parse.urlsplit(self.base).netloc
        self._auth: str | None = None

    def _creds(self) -> tuple[str, str] | None:
        return self.cfg.credentials(self.host)

    def _authenticate(self, resp: http.client.HTTPResponse) -> None:
        challenge = resp.getheader("WWW-Authenticate", "")
        scheme, params = auth.parse_challenge(challenge)
        creds = self._creds()
        if scheme == "basic":
            if creds is None:
                raise RegistryError(
                    f"{self.base}: the registry asks for a login: put credentials for {self.host} "
                    "in ~/.docker/config.json (or $DOCKER_CONFIG/config.json)"
                )
            self._auth = auth.basic(*creds)
        elif scheme == "bearer":
            scope = f"repository:{self.repo}:pull"
            self._auth = auth.bearer_token(self.http, params, scope, creds, self.base)
        else:
            raise RegistryError(f"{self.base}: unsupported authentication challenge {challenge[:100]!r}")

    def get(self, path: str, headers: dict[str, str], what: str) -> http.client.HTTPResponse:
        """GET with retries on 5xx/429 and broken connections, and one round
        of authentication on a 401.  The caller closes the response."""
        authed = False
        attempt = 0
        while True:
            try:
                resp = self.http.open("GET", self.base + path, headers, self._auth)
            except NETWORK_ERRORS as e:
                # nothing listens: no point in waiting (the next mirror is tried at once)
                if attempt >= RETRIES or isinstance(e, ConnectionRefusedError):
                    raise RegistryError(f"{what}: cannot reach {self.base}: {e!r}") from e
                backoff(attempt)
                attempt += 1
                continue
            if resp.status == 401 and not authed:
                resp.read(65536)
                resp.close()
                self._authenticate(resp)
                authed = True
                continue
            if (resp.status >= 500 or resp.status == 429) and attempt < RETRIES:
                resp.read(65536)
                resp.close()
                backoff(attempt)
                attempt += 1
                continue
            return resp

    def _fail(self, resp: http.client.HTTPResponse, what: str) -> RegistryError:
        body = resp.read(4096)
        resp.close()
        detail = body[:300].decode("utf-8", "replace").strip()
        if resp.status == 404:
            return ImageNotFound(f"{what}: not found on {self.base} ({detail!r})")
        if resp.status in (401, 403):
            return RegistryError(
                f"{what}: access denied by {self.base} ({resp.status}); check the credentials "
                f"for {self.host} in ~/.docker/config.json"
            )
        return RegistryError(f"{what}: {self.base} answered {resp.status} {resp.reason!r} ({detail!r})")

    def _small(
        self, path: str, headers: dict[str, str], limit: int, what: str
    ) -> tuple[http.client.HTTPResponse, bytes]:
        """A 200 answer read whole (at most `limit` bytes), and its response."""
        resp = self.get(path, headers, what)
        if resp.status != 200:
            raise self._fail(resp, what)
        try:
            return resp, read_limited(resp, limit, what)
        finally:
            resp.close()

    def manifest(self, ref: str) -> tuple[bytes, str | None, str]:
        """(body, Content-Type, digest of the body), checked against `ref`
        when it is a digest and against Docker-Content-Digest when sent."""
        what = (
            f"manifest {self.repo}:{ref}" if not ref.startswith("sha256:") else f"manifest {self.repo}@{ref}"
        )
        resp, body = self._small(f"/v2/{self.repo}/manifests/{ref}", {"Accept": ACCEPT}, MANIFEST_MAX, what)
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        if ref.startswith("sha256:") and digest != ref:
            raise DigestMismatch(f"{what}: the registry sent content with digest {digest}")
        sent = resp.getheader("Docker-Content-Digest")
        if sent and sent.startswith("sha256:") and sent != digest:
            raise DigestMismatch(f"{what}: the body's digest {digest} is not the announced {sent}")
        return body, resp.getheader("Content-Type"), digest

    def blob_bytes(self, digest: str, size: int, limit: int) -> bytes:
        """A small blob (a config) in memory, verified."""
        what = f"blob {digest}"
        if size > limit:
            raise RegistryError(f"{what}: {size} bytes, more than the {limit} allowed")
        _, body = self._small(f"/v2/{self.repo}/blobs/{digest}", {}, limit, what)
        check(
            body_digest="sha256:" + hashlib.sha256(body).hexdigest(), got=len(body), digest=digest, size=size
        )
        return body

    def blob_to_file(self, digest: str, size: int, path: str, progress: Progress | None = None) -> None:
        """Download into `path` (appended to: a partial file from an earlier,
        interrupted download is resumed with Range).  On a digest or size
        mismatch the file is removed and DigestMismatch raised; when a partial
        file was resumed, the whole blob is fetched once more first."""
        resumed = os.path.exists(path) and os.path.getsize(path) > 0
        try:
            self._download(digest, size, path, progress)
        except DigestMismatch:
            if not resumed:
                raise
            self._download(digest, size, path, progress)  # the partial file may have been the bad part

    def _download(self, digest: str, size: int, path: str, progress: Progress | None) -> None:
        what = f"blob {digest}"
        h = hashlib.sha256()
        with open(path, "ab+") as f:
            f.seek(0)
            have = 0
            while chunk := f.read(CHUNK):
                h.update(chunk)
                have += len(chunk)
            if have > size:
                f.truncate(0)
                h, have = hashlib.sha256(), 0
            attempt = 0
            while have < size or (size == 0 and attempt == 0):
                headers = {"Range": f"bytes={have}-"} if have else {}
                resp = self.get(f"/v2/{self.repo}/blobs/{digest}", headers, what)
                try:
                    if resp.status == 200 and have:
                        f.truncate(0)  # the registry ignored the Range: start over
                        f.seek(0)
                        h, have = hashlib.sha256(), 0
                    elif resp.status == 206:
                        cr = resp.getheader("Content-Range", "")
                        if not cr.startswith(f"bytes {have}-"):
                            raise RegistryError(f"{what}: a resumed answer for the wrong range ({cr!r})")
                    elif resp.status != 200:
                        raise self._fail(resp, what)
                    try:
                        while chunk := resp.read(CHUNK):
                            have += len(chunk)
                            if have > size:
                                break
                            h.update(chunk)
                            f.write(chunk)
                            if progress is not None:
                                f.flush()  # what was reported is on disk: a later try resumes from it
                                progress(have)
                    except NETWORK_ERRORS as e:
                        if attempt >= RETRIES:
                            raise RegistryError(f"{what}: the download kept breaking off: {e!r}") from e
                        f.flush()
                        backoff(attempt)
                        attempt += 1
                        continue
                finally:
                    resp.close()
                if have >= size:
                    break
                if attempt >= RETRIES:
                    break
                backoff(attempt)
                attempt += 1
            f.flush()
            os.fsync(f.fileno())
        try:
            check("sha256:" + h.hexdigest(), have, digest, size)
        except DigestMismatch:
            os.unlink(path)  # never used, never resumed
            raise


def check(body_digest: str, got: int, digest: str, size: int) -> None:
    if got != size:
        raise DigestMismatch(f"blob {digest}: {got} bytes received, the manifest says {size}")
    if body_digest != digest:
        raise DigestMismatch(f"blob {digest}: the content's digest is {body_digest}: corrupt, not used")
