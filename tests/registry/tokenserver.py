#!/usr/bin/env python3
"""A Docker registry token server for the tests (loopback only).

GET /token?service=S&scope=repository:NAME:ACTIONS answers {"token": JWT}:
RS256-signed (openssl dgst) with the signing cert in the header's x5c, which
the registry trusts as its rootcertbundle.  Anonymous callers get "pull";
the user of --user gets every action asked; a wrong password gets 401."""

from __future__ import annotations

import argparse
import base64
import json
import secrets
import subprocess
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Handler(BaseHTTPRequestHandler):
    a: argparse.Namespace
    x5c: str

    def log_message(self, fmt: str, *args: object) -> None:
        print("token-server:", fmt % args, flush=True)

    def _send(self, code: int, obj: object, extra: dict[str, str] | None = None) -> None:
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        u = urlsplit(self.path)
        if u.path == "/healthz":
            return self._send(200, {"ok": True})
        if u.path != "/token":
            return self._send(404, {"error": "not found"})
        q = parse_qs(u.query)
        user = ""
        h = self.headers.get("Authorization", "")
        if h.startswith("Basic "):
            user, _, pw = base64.b64decode(h[6:]).decode(errors="replace").partition(":")
            if f"{user}:{pw}" != self.a.user:
                return self._send(
                    401, {"error": "bad credentials"}, {"WWW-Authenticate": 'Basic realm="token"'}
                )
        access = []
        for scope in " ".join(q.get("scope", [])).split():
            typ, rest = scope.split(":", 1)
            name, _, actions = rest.rpartition(":")
            asked = [x for x in actions.split(",") if x]
            access.append(
                {"type": typ, "name": name, "actions": asked if user else [x for x in asked if x == "pull"]}
            )
        now = int(time.time())
        claims = {
            "iss": self.a.issuer,
            "sub": user,
            "aud": self.a.service,
            "iat": now,
            "nbf": now - 5,
            "exp": now + 300,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        head = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        signing = b64url(json.dumps(head).encode()) + "." + b64url(json.dumps(claims).encode())
        sig = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", self.a.key],
            input=signing.encode(),
            capture_output=True,
            check=True,
        ).stdout
        tok = signing + "." + b64url(sig)
        self._send(200, {"token": tok, "access_token": tok, "expires_in": 300})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--issuer", required=True)
    ap.add_argument("--service", required=True)
    ap.add_argument("--user", required=True, help="USER:PASSWORD")
    a = ap.parse_args()
    host, port = a.listen.rsplit(":", 1)
    if not host.startswith("127."):
        raise SystemExit(f"refusing to listen on {host}: loopback only")
    der = subprocess.run(
        ["openssl", "x509", "-in", a.cert, "-outform", "DER"], capture_output=True, check=True
    ).stdout
    Handler.a, Handler.x5c = a, base64.b64encode(der).decode()
    ThreadingHTTPServer((host, int(port)), Handler).serve_forever()


if __name__ == "__main__":
    main()
