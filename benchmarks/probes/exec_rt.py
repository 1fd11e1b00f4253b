"""The exec round trip: `sb.exec(["/bin/true"])` N times in one sandbox,
median and percentiles.  `python benchmarks/probes/exec_rt.py [N] [noseccomp]`
(root; the Debian rootfs of ./dev test)."""

from __future__ import annotations

import sys
import time

from sandbox import Sandbox

ROOTFS = "/var/lib/sandbox/rootfs/debian"


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 2000
    kw: dict[str, object] = {"seccomp": None} if "noseccomp" in sys.argv else {}
    with Sandbox(rootfs=ROOTFS, **kw) as sb:  # type: ignore[arg-type]
        for _ in range(50):
            sb.exec(["/bin/true"])
        t = []
        for _ in range(n):
            a = time.perf_counter()
            sb.exec(["/bin/true"])
            t.append(time.perf_counter() - a)
    t.sort()
    pct = {q: t[int(n * q)] * 1e6 for q in (0.1, 0.5, 0.9, 0.99)}
    print(f"exec round trip: median {pct[0.5]:.0f} us", end="")
    print(f", p10 {pct[0.1]:.0f}, p90 {pct[0.9]:.0f}, p99 {pct[0.99]:.0f}")


if __name__ == "__main__":
    main()
