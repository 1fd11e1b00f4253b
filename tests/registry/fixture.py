"""pytest fixtures for the image tests (a plugin of tests/conftest.py): the real registry (registry.sh up,
once per session), a private image store per test, and a loopback proxy
that records every request a test's pulls make."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require

HERE = Path(__file__).resolve().parent
TOOLS = ("docker-registry", "skopeo", "htpasswd", "openssl", "curl")


@dataclass
class Registry:
    env: dict[str, str]
    images: dict[str, Any]

    def __getattr__(self, name: str) -> str:
        try:
            return self.env[name]
        except KeyError:
            raise AttributeError(name) from None

    def ref(self, name: str, endpoint: str = "plain") -> str:
        """'127.0.0.1:5180/library/busybox:latest' for 'busybox:latest'."""
        return f"{self.env[endpoint]}/library/{name}"

    def image(self, name: str) -> dict[str, Any]:
        return self.images[f"library/{name}"]  # type: ignore[no-any-return]


def start() -> Registry:
    """registry.sh up (idempotent; fast when warm), then its addresses and digests."""
    for tool in TOOLS:
        require(shutil.which(tool), f"no {tool}: ./dev installs it (see APT_PACKAGES)")
    r = subprocess.run(["bash", str(HERE / "registry.sh"), "up"], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"tests/registry/registry.sh up failed:\n{r.stderr[-3000:]}"
    d = Path(os.environ.get("SANDBOX_REGISTRY_DIR", "/var/tmp/sandbox-registry")) / "run"
    env = json.loads((d / "env.json").read_text())
    return Registry(env, json.loads((d / "images.json").read_text())["images"])


@pytest.fixture(scope="session")
def registry() -> Registry:
    return start()


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registry: Registry) -> Path:
    """A private store; the registries reached over plain HTTP marked
    insecure; no machine-wide configuration, no credentials, no Docker Hub."""
    root = tmp_path / "store"
    monkeypatch.setenv("SANDBOX_IMAGE_STORE", str(root))
    monkeypatch.setenv("SANDBOX_REGISTRY_CONFIG", str(tmp_path / "no-registries.json"))
    monkeypatch.setenv(
        "SANDBOX_INSECURE_REGISTRIES", ",".join((registry.plain, registry.basic, registry.token))
    )
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    monkeypatch.setenv("SANDBOX_REGISTRY_MIRRORS_ONLY", "1")  # never out to Docker Hub
    for var in ("SANDBOX_REGISTRY_MIRRORS", "SANDBOX_REGISTRY_CA"):
        monkeypatch.delenv(var, raising=False)
    return root


@dataclass
class Proxy:
    """A TCP forwarder on 127.0.0.1 that records each request, and can fail
    requests on purpose: `faults` holds what the next ones for `fault_on` get,
    "503" (an error answer) or "cut" (the connection drops after CUT bytes)."""

    target: tuple[str, int]
    requests: list[str] = field(default_factory=list)
    heads: list[bytes] = field(default_factory=list)  # the first bytes of each request (its headers)
    faults: list[str] = field(default_factory=list)
    fault_on: str = "/blobs/"  # which requests get the faults
    sock: socket.socket = field(default_factory=lambda: socket.create_server(("127.0.0.1", 0)))
    lock: threading.Lock = field(default_factory=threading.Lock)
    CUT = 300_000

    def blob_gets(self, digest: str) -> list[bytes]:
        """The heads of the GETs of one blob, in order."""
        with self.lock:
            return [h for h in self.heads if f"/blobs/{digest} ".encode() in h.split(b"\r\n", 1)[0]]

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.sock.getsockname()[1]}"

    def serve(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._conn, args=(c,), daemon=True).start()

    def _conn(self, c: socket.socket) -> None:
        try:
            self._forward(c)
        except OSError:
            pass  # a client killed mid-request (the SIGKILL tests) resets its connection
        finally:
            c.close()

    def _forward(self, c: socket.socket) -> None:
        data = c.recv(65536)
        if not data:
            return
        line = data.split(b"\r\n", 1)[0].decode(errors="replace")
        # recorded before anything reaches the registry: a pull cannot
        # finish before its requests are counted
        with self.lock:
            self.requests.append(line)
            self.heads.append(data)
            fault = self.faults.pop(0) if self.faults and self.fault_on in line else None
        if fault == "503":
            c.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        with socket.create_connection(self.target) as up:
            t = threading.Thread(
                target=self._pipe, args=(up, c, self.CUT if fault == "cut" else None), daemon=True
            )
            t.start()
            while data:
                up.sendall(data)
                data = c.recv(65536)
            up.shutdown(socket.SHUT_WR)
            t.join()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket, limit: int | None) -> None:
        sent = 0
        try:
            while data := src.recv(65536):
                if limit is not None and sent + len(data) >= limit:
                    dst.sendall(data[: limit - sent])
                    dst.shutdown(socket.SHUT_RDWR)  # the connection breaks off mid-answer
                    return
                dst.sendall(data)
                sent += len(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


@pytest.fixture
def proxy(registry: Registry, store: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Proxy]:
    """A proxy of the plain registry, reached over plain HTTP as it is."""
    host, port = registry.plain.rsplit(":", 1)
    p = Proxy((host, int(port)))
    monkeypatch.setenv("SANDBOX_INSECURE_REGISTRIES", f"{os.environ['SANDBOX_INSECURE_REGISTRIES']},{p.addr}")
    t = threading.Thread(target=p.serve, daemon=True)
    t.start()
    yield p
    p.sock.close()
    t.join(5)
