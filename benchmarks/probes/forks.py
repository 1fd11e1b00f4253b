"""Fork -> exec and exec -> exit of every process started while a command
runs, by its parent's name, and how often the child's exec ran on another
CPU than the fork (ftrace).  `python benchmarks/probes/forks.py CMD...`
(root), e.g. with `/tmp/floor 3000 /bin/true` (floor.c) or with
`python benchmarks/probes/exec_rt.py 3000`: the init's children show as
memfd:sandbox-i."""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
from collections import defaultdict

from _trace import PROCESS_EVENTS, events, tracing


def main() -> None:
    with tracing(PROCESS_EVENTS) as lines:
        subprocess.run(sys.argv[1:], check=False)
    parent: dict[int, str] = {}
    forked: dict[int, tuple[float, int]] = {}
    execd: dict[int, float] = {}
    res: dict[tuple[str, str], list[float]] = defaultdict(list)
    for _, pid, cpu, ts, ev, rest in events(lines):
        if ev == "sched_process_fork":
            child = int(re.search(r"child_pid=(\d+)", rest)[1])  # type: ignore[index]
            parent[child] = re.search(r"comm=(\S+)", rest)[1]  # type: ignore[index]
            forked[child] = (ts, cpu)
        elif ev == "sched_process_exec" and pid in forked:
            t0, cpu0 = forked[pid]
            execd[pid] = ts
            res[(parent[pid], "fork -> exec")].append(ts - t0)
            res[(parent[pid], "exec on another CPU")].append(float(cpu != cpu0))
        elif ev == "sched_process_exit" and pid in execd:
            res[(parent[pid], "exec -> exit")].append(ts - execd.pop(pid))
    for (who, what), v in sorted(res.items()):
        if len(v) >= 100:
            med, mean = statistics.median(v), statistics.mean(v)
            print(f"{who:18s} {what:20s} n={len(v)} median {med:7.2f} mean {mean:7.2f}")


if __name__ == "__main__":
    main()
