"""The registry client against answers a real registry would not give: a
small loopback HTTP server plays a hostile or broken one.  (The real
registry's tests are in tests/integration/test_images_registry.py.)"""

from __future__ import annotations

import hashlib
import io
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from sandbox.images import config as regconfig
from sandbox.images.cli import ProgressDisplay
from sandbox.images.errors import DigestMismatch, RegistryError
from sandbox.images.registry import Client

Handler = Callable[[BaseHTTPRequestHandler], None]


@pytest.fixture
def server() -> Iterator[tuple[str, list[Handler], list[dict[str, str]]]]:
    """(base URL, handlers to answer with in turn, headers of each request)."""
    handlers: list[Handler] = []
    seen: list[dict[str, str]] = []

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a: object) -> None:
            pass

        def do_GET(self) -> None:
            seen.append(dict(self.headers))
            handlers.pop(0)(self)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_port}", handlers, seen
    srv.shutdown()
    srv.server_close()


def answer(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> Handler:
    def h(req: BaseHTTPRequestHandler) -> None:
        req.send_response(status)
        for k, v in (headers or {}).items():
            req.send_header(k, v)
        req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        req.wfile.write(body)

    return h


def client(base: str) -> Client:
    return Client(base, "library/x", regconfig.RegistryConfig())


def test_announced_digest_must_match(server: tuple[str, list[Handler], list[dict[str, str]]]) -> None:
    base, handlers, _ = server
    handlers.append(answer(200, b"{}", {"Docker-Content-Digest": "sha256:" + "0" * 64}))
    with pytest.raises(DigestMismatch, match="is not the announced sha256:0000"):
        client(base).manifest("latest")


def test_by_digest_content_must_match(server: tuple[str, list[Handler], list[dict[str, str]]]) -> None:
    base, handlers, _ = server
    handlers.append(answer(200, b'{"schemaVersion": 2}'))
    with pytest.raises(DigestMismatch, match="sent content with digest"):
        client(base).manifest("sha256:" + "1" * 64)


def test_oversized_manifest_refused(server: tuple[str, list[Handler], list[dict[str, str]]]) -> None:
    base, handlers, _ = server
    handlers.append(answer(200, b" " * ((4 << 20) + 10)))
    with pytest.raises(RegistryError, match="sent more than 4194304 bytes"):
        client(base).manifest("latest")


def test_5xx_retried_then_reported(
    server: tuple[str, list[Handler], list[dict[str, str]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    base, handlers, seen = server
    monkeypatch.setattr("sandbox.images.http.BACKOFF", 0.001)
    handlers.extend([answer(503)] * 6)
    with pytest.raises(RegistryError, match="answered 503"):
        client(base).manifest("latest")
    assert len(seen) == 6  # the first try and five retries


ESCAPES = "\x1b]0;owned\x07\x1b[2J"  # a terminal title and a cleared screen


def test_status_reason_is_quoted(server: tuple[str, list[Handler], list[dict[str, str]]]) -> None:
    """Found by review: the registry's reason phrase was printed raw."""
    base, handlers, _ = server

    def h(req: BaseHTTPRequestHandler) -> None:
        req.send_response(418, ESCAPES)
        req.send_header("Content-Length", "0")
        req.end_headers()

    handlers.append(h)
    with pytest.raises(RegistryError) as e:
        client(base).manifest("latest")
    assert "\x1b" not in str(e.value) and f"answered 418 {ESCAPES!r}" in str(e.value)


def test_bad_status_line_is_quoted(
    server: tuple[str, list[Handler], list[dict[str, str]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by review: http.client.BadStatusLine carries the line as sent, and it was printed raw."""
    base, handlers, _ = server
    monkeypatch.setattr("sandbox.images.http.BACKOFF", 0.001)

    def h(req: BaseHTTPRequestHandler) -> None:
        req.wfile.write(ESCAPES.encode() + b"\r\n\r\n")

    handlers.extend([h] * 6)
    with pytest.raises(RegistryError, match="cannot reach") as e:
        client(base).manifest("latest")
    assert "\x1b" not in str(e.value) and "BadStatusLine(" in str(e.value)


def test_authorization_not_sent_to_another_origin(
    server: tuple[str, list[Handler], list[dict[str, str]]],
) -> None:
    base, handlers, seen = server
    body = b"data"
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    other = base.replace("127.0.0.1", "localhost")  # same server, another origin
    handlers.append(answer(401, headers={"WWW-Authenticate": 'Basic realm="r"'}))
    handlers.append(answer(307, headers={"Location": f"{other}/storage/blob"}))
    handlers.append(answer(200, body))
    c = Client(base, "library/x", regconfig.RegistryConfig(auths={base[7:]: ("u", "p")}))
    assert c.blob_bytes(digest, len(body), 1000) == body
    assert "Authorization" not in seen[0] and seen[1]["Authorization"].startswith("Basic ")
    assert "Authorization" not in seen[2], "the credentials followed a redirect to another host"


def test_blob_larger_than_announced(
    server: tuple[str, list[Handler], list[dict[str, str]]], tmp_path: Path
) -> None:
    base, handlers, _ = server
    body = b"y" * 5000
    handlers.append(answer(200, body))
    path = tmp_path / "blob.partial"
    with pytest.raises(DigestMismatch, match="5000 bytes received, the manifest says 100"):
        client(base).blob_to_file("sha256:" + hashlib.sha256(body[:100]).hexdigest(), 100, str(path))
    assert not path.exists()


def test_plain_http_realm_refused_for_tls(server: tuple[str, list[Handler], list[dict[str, str]]]) -> None:
    from sandbox.images.auth import bearer_token
    from sandbox.images.http import Http

    with pytest.raises(RegistryError, match="refusing a plain-HTTP token realm"):
        bearer_token(Http(), {"realm": "http://127.0.0.1:1/token"}, "repository:x:pull", None, "https://reg")


def test_store_default_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from sandbox.images.store import default_root

    monkeypatch.delenv("SANDBOX_IMAGE_STORE", raising=False)
    monkeypatch.delenv("SANDBOX_HOME", raising=False)
    monkeypatch.setattr("os.geteuid", lambda: 0)
    assert str(default_root()) == "/var/lib/sandbox/images"
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_root() == tmp_path / "sandbox" / "images"


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_display_on_a_terminal() -> None:
    out = Tty()
    show = ProgressDisplay("debian:bookworm", out)
    show("download", "sha256:" + "a" * 64, 5_000_000, 10_000_000)
    show("exists", "sha256:" + "b" * 64, 1_000_000, 1_000_000)
    show("done", "sha256:" + "a" * 64, 10_000_000, 10_000_000)
    show.end()
    text = out.getvalue()
    assert "\r\x1b[Kdebian:bookworm: 0/1 layers, 5.0 MB of 10.0 MB" in text
    assert text.endswith("\r\x1b[Kdebian:bookworm: 2/2 layers, 11.0 MB of 11.0 MB\r\x1b[K")
