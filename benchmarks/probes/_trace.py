"""A little ftrace, for the probes: events on for the length of a `with`,
then the trace's lines.  Root, and tracefs at /sys/kernel/tracing (mounted
here if it is not; unmount it after if nothing else needs it)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager

T = "/sys/kernel/tracing/"
LINE = re.compile(r"^\s*(.+?)-(\d+)\s+\[(\d+)\].{5,6}\s+([\d.]+): (\w+): (.*)$")


def _w(name: str, value: str) -> None:
    with open(T + name, "w") as f:
        f.write(value)


@contextmanager
def tracing(events: list[str], filters: dict[str, str] | None = None) -> Iterator[list[str]]:
    """Trace `events` ("sched/sched_switch"...) inside the block; the list it
    yields is filled with the trace's lines when the block ends."""
    if not os.path.exists(T + "tracing_on"):
        os.system("mount -t tracefs nodev /sys/kernel/tracing")
    lines: list[str] = []
    _w("tracing_on", "0")
    _w("trace", "")
    _w("buffer_size_kb", "30000")
    for e in events:
        if filters and e in filters:
            _w(f"events/{e}/filter", filters[e])
        _w(f"events/{e}/enable", "1")
    try:
        _w("tracing_on", "1")
        yield lines
    finally:
        _w("tracing_on", "0")
        for e in events:
            _w(f"events/{e}/enable", "0")
            if filters and e in filters:
                _w(f"events/{e}/filter", "0")
        with open(T + "trace") as f:
            lines.extend(f.read().splitlines())
        _w("trace", "")
        _w("buffer_size_kb", "1408")
        _w("tracing_on", "1")


# a process's fork, exec and exit (after its memory is gone)
PROCESS_EVENTS = ["sched/sched_process_fork", "sched/sched_process_exec", "sched/sched_process_exit"]


def events(lines: list[str]) -> Iterator[tuple[str, int, int, float, str, str]]:
    """(comm, pid, cpu, time in us, event, rest) of each event line."""
    for line in lines:
        m = LINE.match(line)
        if m:
            yield m[1], int(m[2]), int(m[3]), float(m[4]) * 1e6, m[5], m[6]
