"""Run a few commands in a sandbox made from the embedded busybox rootfs.

sudo .venv/bin/python examples/hello.py
"""

from __future__ import annotations

import os
import sys

from sandbox import CommandNotFound, Sandbox

ROOTFS = os.path.join(os.environ.get("SANDBOX_HOME", "/var/lib/sandbox"), "rootfs", "busybox")


def main() -> int:
    with Sandbox(
        rootfs=ROOTFS, hostname="hello", secrets={"token": b"not-for-output"}, redact_secrets=True
    ) as sb:
        r = sb.exec(["sh", "-c", "echo hello from $(hostname), uid $(id -u); cat /run/secrets/token"])
        print(r.stdout_text.strip(), f"({r.reason}, {r.wall_time * 1e3:.1f} ms)")
        r = sb.exec(["sleep", "10"], timeout=0.2)
        print("sleep 10 with timeout=0.2:", r.reason)
        r = sb.exec(["sh", "-c", "unshare -U true"])
        print("unshare inside:", r.stderr_text.strip())
        sb.files.write_text("/tmp/data.txt", "3\n1\n2\n")
        print("sorted:", sb.exec(["sort", "/tmp/data.txt"]).stdout_text.split())
        try:
            sb.exec(["/bin/nosuch"])
        except CommandNotFound as e:
            print("error:", e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
