"""A web server in a bridge-mode sandbox, its port published on the host,
queried from the host.

    sudo .venv/bin/python examples/webserver.py [HOST_PORT]

The server is Python's http.server in the `python` image (built locally by
./dev, see README "Images"), on a network of its own, allowed to open no
connection (egress=[]) and with a memory limit; the host reaches it at
127.0.0.1:HOST_PORT through the published port (DNAT in our own nftables
table).
"""

from __future__ import annotations

import sys
import time
import urllib.request

from sandbox import Limits, Network, Sandbox

PAGE = "<h1>hello from a sandbox</h1>\n"


def serve_and_fetch(host_port: int = 8080, timeout: float = 20.0) -> tuple[int, str, str]:
    """Start the server, GET / from the host; (status, body, server's address)."""
    with Sandbox(
        image="python",
        hostname="web",
        network=Network("webdemo"),  # a network of its own
        publish={host_port: 8000},
        egress=[],  # it answers, but opens no connection anywhere
        limits=Limits(memory="128M", pids=32),
    ) as sb:
        sb.files.mkdir("/srv/www", parents=True)
        sb.files.write_text("/srv/www/index.html", PAGE)
        server = sb.spawn(["python3", "-m", "http.server", "8000", "--bind", "0.0.0.0", "-d", "/srv/www"])
        addr = sb.exec(["hostname", "-i"]).stdout_text.strip()
        deadline = time.monotonic() + timeout
        while True:  # the server needs a moment to bind
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{host_port}/", timeout=2) as resp:
                    status, body = resp.status, resp.read().decode()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.05)
        server.kill()
        server.wait()
        return status, body, addr


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8080
    status, body, addr = serve_and_fetch(port)
    print(f"GET http://127.0.0.1:{port}/ -> {status} (server at {addr} in its sandbox)")
    print(body, end="")


if __name__ == "__main__":
    main()
