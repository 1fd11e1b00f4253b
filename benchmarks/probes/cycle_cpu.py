"""Full cycles back to back for S seconds: their median, and the CPU the
whole machine spent per cycle (all processes and kernel threads, from
/proc/stat, with half a second after the last cycle for deferred
teardown).  A back-to-back cycle is CPU-bound on two CPUs, so this moves
with its latency but with much less noise.
`python benchmarks/probes/cycle_cpu.py [S] [limits] [noseccomp]` (root)."""

from __future__ import annotations

import os
import sys
import time

from sandbox import Limits, Sandbox

ROOTFS = "/var/lib/sandbox/rootfs/debian"


def busy_ticks() -> int:
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v) - v[3] - v[4]  # all but idle and iowait


def main() -> None:
    secs = float(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1][0].isdigit() else 6.0
    kw: dict[str, object] = {}
    if "limits" in sys.argv:
        kw["limits"] = Limits(memory="256M", pids=64, cpus=1.0)
    if "noseccomp" in sys.argv:
        kw["seccomp"] = None

    def cycle() -> None:
        with Sandbox(rootfs=ROOTFS, **kw) as sb:  # type: ignore[arg-type]
            sb.exec(["/bin/true"])

    for _ in range(30):
        cycle()
    b0, start, lat = busy_ticks(), time.perf_counter(), []
    while time.perf_counter() - start < secs:
        a = time.perf_counter()
        cycle()
        lat.append(time.perf_counter() - a)
    time.sleep(0.5)
    cpu = (busy_ticks() - b0) / os.sysconf("SC_CLK_TCK") / len(lat)
    lat.sort()
    median = lat[len(lat) // 2]
    print(f"{len(lat)} cycles, median {median * 1e3:.2f} ms, machine CPU per cycle {cpu * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
