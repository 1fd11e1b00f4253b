"""Where an exec round trip goes, from a few scheduler events (ftrace):
S (exec() called) -> fork (the init forks) -> exec (the child's execve) ->
exit (the command exits, after its memory is gone) -> wake (our thread is
woken by the exit record) -> E (exec() returned); medians in us.
`python benchmarks/probes/timeline.py [N] [limits]` (root); `limits`: in a
sandbox with the start benchmark's limits (its execs in cgroups).  Compare with
forks.py on the C floor (floor.c)."""

from __future__ import annotations

import itertools
import os
import statistics
import sys
from collections import defaultdict

from _trace import PROCESS_EVENTS, T, events, tracing

from sandbox import Limits, Sandbox

ROOTFS = "/var/lib/sandbox/rootfs/debian"
STEPS = ["S", "fork", "exec", "exit", "wake", "E"]


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 1000
    limits = Limits(memory="256M", pids=128, cpus=1.0, cpu_time=10, timeout=10, output="16M")
    traced = [*PROCESS_EVENTS, "sched/sched_wakeup"]
    with Sandbox(rootfs=ROOTFS, limits=limits if "limits" in sys.argv else None) as sb:
        for _ in range(50):
            sb.exec(["/bin/true"])
        with tracing(traced, {"sched/sched_wakeup": f"pid == {os.getpid()}"}) as lines:
            mark = os.open(T + "trace_marker", os.O_WRONLY)  # tracefs is mounted now
            for _ in range(n):
                os.write(mark, b"S")
                sb.exec(["/bin/true"])
                os.write(mark, b"E")
        os.close(mark)
    res: dict[str, list[float]] = defaultdict(list)
    cur: dict[str, float] | None = None
    for _, _, _, ts, ev, rest in events(lines):
        if ev == "tracing_mark_write":
            if rest.strip() == "S":
                cur = {"S": ts}
            elif rest.strip() == "E" and cur is not None:
                cur["E"] = ts
                if all(k in cur for k in STEPS):
                    for a, b in itertools.pairwise(STEPS):
                        res[f"{a} -> {b}"].append(cur[b] - cur[a])
                    res["total"].append(cur["E"] - cur["S"])
                cur = None
        elif cur is not None:
            if ev == "sched_process_fork":
                cur.setdefault("fork", ts)
            elif ev == "sched_process_exec":
                cur.setdefault("exec", ts)
            elif ev == "sched_process_exit" and "exec" in cur:
                cur.setdefault("exit", ts)
            elif ev == "sched_wakeup" and "exit" in cur:
                cur.setdefault("wake", ts)
    for k, v in res.items():
        print(f"{k:14s} n={len(v)} median {statistics.median(v):7.1f} us")


if __name__ == "__main__":
    main()
