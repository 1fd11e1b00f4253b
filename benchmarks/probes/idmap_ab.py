"""A full cycle (Debian rootfs, default seccomp, back to back) with
idmap="auto" against idmap="shared", alternating: 6 rounds of 30 warm-up
and 100 timed cycles each; prints each round's median (ms).

    .venv/bin/python benchmarks/probes/idmap_ab.py
"""

import statistics
import time

from sandbox import Sandbox

R = "/var/lib/sandbox/rootfs/debian"
res: dict[str, list[float]] = {"auto": [], "shared": []}
for _ in range(6):
    for mode in ("auto", "shared"):
        for _ in range(30):
            with Sandbox(rootfs=R, idmap=mode) as s:
                s.exec(["/bin/true"])
        ts = []
        for _ in range(100):
            t = time.perf_counter()
            with Sandbox(rootfs=R, idmap=mode) as s:
                s.exec(["/bin/true"])
            ts.append(time.perf_counter() - t)
        res[mode].append(statistics.median(ts) * 1e3)
for m, v in res.items():
    print(m, " ".join(f"{x:.2f}" for x in v), f"median of medians {statistics.median(v):.2f}")
