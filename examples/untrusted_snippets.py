"""An application that runs untrusted Python snippets for its callers.

    sudo .venv/bin/python examples/untrusted_snippets.py      # a demo: one JSON line per snippet

Each caller id gets a warm sandbox of its own (image "python"), started on
its first snippet and reused by the next ones (files it leaves in /tmp are
there for its next snippet, never for another caller); at most
`max_sandboxes` stay warm, the least recently used idle one is closed to
make room, and all are closed at shutdown.  A caller's snippets run one at
a time, different callers' at once.  Each snippet runs as nobody with a
wall-clock timeout, a CPU-time limit, memory and process limits and a cap
on its output, and yields a `SnippetResult` (a dataclass; `to_json()`).

    async with SnippetRunner() as runner:
        res = await runner.run("alice", "print(6 * 7)")
        res.status, res.stdout            # ("ok", "42\\n")
"""

from __future__ import annotations

import functools
import json
import sys
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass

import anyio

from sandbox import AsyncSandbox, Limits, SandboxError

MAX_CODE = 64 * 1024  # bytes; one argv string may hold 128 KiB


@dataclass(frozen=True)
class SnippetResult:
    caller: str
    status: str
    """"ok", "error" (an exception or a non-zero exit status), "timeout",
    "cpu_time", "memory", "output_limit", "killed" (a signal, the pids
    limit, the seccomp profile), "rejected" (never ran) or "failed" (the
    sandbox failed: it is replaced on the caller's next snippet)."""
    exit_code: int | None
    stdout: str
    stderr: str
    truncated: bool  # the output went over the cap and was cut there
    wall_time: float
    cpu_time: float
    max_memory: int | None
    warm: bool  # ran in the caller's sandbox from an earlier snippet

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_json(self) -> str:
        return json.dumps(asdict(self))


_STATUS = {"exited": "ok", "timeout": "timeout", "cpu_time": "cpu_time", "oom": "memory",
           "output_limit": "output_limit"}  # fmt: skip


@dataclass
class _Caller:
    lock: anyio.Lock
    sandbox: AsyncSandbox | None = None


class SnippetRunner:
    """Runs snippets in one warm sandbox per caller.  Use `async with`, or
    call `aclose()` at shutdown."""

    def __init__(
        self,
        *,
        image: str = "python",
        timeout: float = 10.0,
        cpu_time: float = 1.0,
        memory: str = "128M",
        output: str = "64K",
        max_sandboxes: int = 16,
    ) -> None:
        self.image = image
        self.limits = Limits(timeout=timeout, cpu_time=cpu_time, memory=memory, pids=32, output=output)
        self.max_sandboxes = max_sandboxes
        self._callers: OrderedDict[str, _Caller] = OrderedDict()  # least recently used first
        self.started = 0  # sandboxes started so far

    async def __aenter__(self) -> SnippetRunner:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def run(
        self, caller: str, code: str, stdin: str | None = None, timeout: float | None = None
    ) -> SnippetResult:
        """Run `code` in the caller's sandbox; `timeout` overrides the runner's for this snippet."""
        if len(code.encode()) > MAX_CODE or "\0" in code:
            return _rejected(caller, f"the snippet must be at most {MAX_CODE} bytes, without NUL")
        c = self._callers.get(caller)
        if c is None:
            c = self._callers[caller] = _Caller(anyio.Lock())
        self._callers.move_to_end(caller)
        async with c.lock:
            warm = c.sandbox is not None
            if c.sandbox is None:
                await self._make_room(keep=caller)
                c.sandbox = await self._start()
            try:
                r = await c.sandbox.exec(
                    ["python3", "-I", "-c", code], stdin=stdin, cwd="/tmp",
                    limits=None if timeout is None else Limits(timeout=timeout),
                )  # fmt: skip
            except SandboxError as e:  # the sandbox is broken (its init died...): the next run gets a new one
                sb, c.sandbox = c.sandbox, None
                await sb.aclose()
                return _rejected(caller, f"{type(e).__name__}: {e}", status="failed", warm=warm)
        status = _STATUS.get(r.reason, "killed")
        if status == "ok" and r.exit_code != 0:
            status = "error"
        return SnippetResult(caller, status, r.exit_code, r.stdout_text, r.stderr_text, r.truncated,
                             round(r.wall_time, 4), round(r.cpu_time, 4), r.max_memory, warm)  # fmt: skip

    async def _start(self) -> AsyncSandbox:
        # The constructor resolves the image (a pull when the store lacks it): off the event loop.
        make = functools.partial(
            AsyncSandbox, image=self.image, user="65534:65534", hostname="snippets", disk="64M",
            limits=self.limits,
        )  # fmt: skip
        sb = await anyio.to_thread.run_sync(make)
        await sb.start()
        self.started += 1
        return sb

    async def _make_room(self, keep: str) -> None:
        warm = [k for k, c in self._callers.items() if c.sandbox is not None and k != keep]
        for k in warm[: max(0, len(warm) + 1 - self.max_sandboxes)]:
            c = self._callers[k]
            if c.lock.locked():
                continue  # running a snippet now: not idle
            sb, c.sandbox = c.sandbox, None
            assert sb is not None
            await sb.aclose()

    async def aclose(self) -> None:
        callers, self._callers = self._callers, OrderedDict()
        for c in callers.values():
            async with c.lock:  # lets a running snippet finish
                if c.sandbox is not None:
                    await c.sandbox.aclose()
                    c.sandbox = None


def _rejected(caller: str, why: str, status: str = "rejected", warm: bool = False) -> SnippetResult:
    return SnippetResult(caller, status, None, "", why, False, 0.0, 0.0, None, warm)


DEMO: list[tuple[str, str] | tuple[str, str, float]] = [
    ("alice", "open('/tmp/notes', 'w').write('kept for alice'); print('saved')"),
    ("bob", "while True: pass"),
    ("carol", "print('x' * 10_000_000)"),
    ("dave", "b = bytearray(b'x') * (1 << 30)"),
    ("erin", "import os; os.rmdir('/etc')"),
    ("mallory", "print(open('/tmp/notes').read())"),
]
LATER: list[tuple[str, str] | tuple[str, str, float]] = [
    ("alice", "print(open('/tmp/notes').read())"),
    ("bob", "import time; time.sleep(60)", 0.5),  # a timeout of its own
]


async def demo() -> list[SnippetResult]:
    results: list[SnippetResult] = []
    async with SnippetRunner() as runner:
        for batch in (DEMO, LATER):  # at once; the second batch finds warm sandboxes
            done: dict[int, SnippetResult] = {}

            async def one(done: dict[int, SnippetResult], i: int, caller: str, code: str, *t: float) -> None:
                done[i] = await runner.run(caller, code, timeout=t[0] if t else None)

            async with anyio.create_task_group() as tg:
                for i, snippet in enumerate(batch):
                    tg.start_soon(one, done, i, *snippet)
            results += [done[i] for i in range(len(batch))]
        started = runner.started
    print(f"{len(results)} snippets, {started} sandboxes started", file=sys.stderr)
    return results


def main() -> int:
    t0 = time.monotonic()
    results = anyio.run(demo)
    for r in results:  # the demo prints the heads of a few fields; r.to_json() has them all
        d = {
            "caller": r.caller,
            "status": r.status,
            "warm": r.warm,
            "truncated": r.truncated,
            "stdout": r.stdout[:40],
            "stderr": r.stderr.strip().splitlines()[-1:],
            "cpu_time": r.cpu_time,
        }
        print(json.dumps(d))
    print(f"in {time.monotonic() - t0:.2f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
