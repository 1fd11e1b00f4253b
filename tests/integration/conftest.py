"""The in-sandbox probe (tests/probe/probe.c): built once per session, copied
into each sandbox, run there; it reports what the sandbox looks like from
inside as JSON (see the comment at the top of probe.c)."""

from __future__ import annotations

import json
import shutil
import subprocess
import weakref
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require

PROBE_SRC = Path(__file__).resolve().parent.parent / "probe" / "probe.c"
PROBE_PATH = "/tmp/probe"


@pytest.fixture(scope="session")
def probe_binary(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The probe, statically linked (it runs in any rootfs)."""
    require(shutil.which("gcc"), "no gcc to build tests/probe/probe.c")
    out = tmp_path_factory.mktemp("probe") / "probe"
    r = subprocess.run(
        ["gcc", "-static", "-O2", "-o", str(out), str(PROBE_SRC)], capture_output=True, text=True, timeout=120
    )
    require(
        r.returncode == 0 or "cannot find -lc" not in r.stderr,
        "no static libc to link the probe with (apt-get install libc6-dev)",
    )
    assert r.returncode == 0, f"building the probe failed:\n{r.stderr}"
    return out.read_bytes()


def install_probe(sb: Any, data: bytes, path: str = PROBE_PATH) -> str:
    sb.files.write_bytes(path, data, mode=0o755)
    return path


def run_probe(sb: Any, *ops: str, path: str = PROBE_PATH, **kw: Any) -> dict[str, Any]:
    """Run the probe (already installed at `path`) with `ops`; its report.
    Extra keywords go to exec (user=, env=, ...)."""
    r = sb.exec([path, *ops], timeout=kw.pop("timeout", 30), **kw)
    # "seccomp": a child the probe forked was stopped by a kill action (the
    # ABI checks), which is the command's verdict; the probe itself went on
    assert r.reason in ("exited", "seccomp") and r.exit_code == 0, (ops, r, r.stderr)
    try:
        return json.loads(r.stdout)
    except ValueError:
        raise AssertionError(f"the probe printed no JSON: {r.stdout[:2000]!r} {r.stderr[:2000]!r}") from None


def errnos(report: dict[str, Any]) -> dict[str, str | None]:
    """{op: errno name or None (success)} of a probe report."""
    return {k: v["errno"] for k, v in report["ops"].items()}


def caps(report: dict[str, Any]) -> dict[str, int]:
    """The five capability sets of a probe report, as ints."""
    return {k: int(report["status"][k], 16) for k in ("CapEff", "CapPrm", "CapBnd", "CapAmb", "CapInh")}


@pytest.fixture
def probe(probe_binary: bytes) -> Any:
    """probe(sb, *ops, **exec_kw): install the probe in `sb` (once) and run it."""
    installed: weakref.WeakSet[Any] = weakref.WeakSet()

    def run(sb: Any, *ops: str, **kw: Any) -> dict[str, Any]:
        if sb not in installed:
            install_probe(sb, probe_binary)
            installed.add(sb)
        return run_probe(sb, *ops, **kw)

    return run
