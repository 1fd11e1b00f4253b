"""A pull SIGKILLed while it downloads, and while it unpacks: nothing half
made is ever used, the next pull succeeds (resuming the download), and
`sandbox images --verify` finds the store intact."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox import images
from sandbox.images.store import Store
from tests.registry.fixture import Proxy, Registry

pytestmark = pytest.mark.integration

# The child stops for good inside the progress callback at the chosen point
# (after 1 MiB downloaded, or 1 MiB unpacked) and says so; then it is killed.
# Where it dies is thus exact, not a matter of timing.
CHILD = """
import sys, time
from sandbox import images
stage = sys.argv[2]
def progress(event, digest, done, total):
    if event == stage and done >= 1 << 20:
        print("stopped", event, done, flush=True)
        time.sleep(3600)
images.pull(sys.argv[1], progress=progress)
"""


def pull_and_kill(ref: str, stage: str, env: dict[str, str]) -> None:
    p = subprocess.Popen(
        [sys.executable, "-c", CHILD, ref, stage], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        line = p.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith(f"stopped {stage} "), f"the pull never reached {stage}: {line!r}"
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        p.stdout.close()  # type: ignore[union-attr]
    assert p.returncode == -signal.SIGKILL


def cli_verify() -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sandbox.cli", "images", "--verify"],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_killed_during_download(store: Path, registry: Registry, proxy: Proxy) -> None:
    ref = f"{proxy.addr}/library/debian:bookworm"
    pull_and_kill(ref, "download", dict(os.environ))
    st = Store()
    layer = registry.image("debian:bookworm")["layers"][0]
    partial = Path(f"{st.blob_path(layer['digest'])}.partial")
    assert partial.stat().st_size >= 1 << 20, "the downloaded part was not kept for a resume"
    assert not st.has_blob(layer["digest"]) and images.list() == []
    r = cli_verify()
    assert r.returncode == 0 and "intact" in r.stdout, r.stderr
    before = len(proxy.blob_gets(layer["digest"]))
    img = images.pull(ref)
    assert img.digest == registry.image("debian:bookworm")["digest"]
    blob_gets = proxy.blob_gets(layer["digest"])[before:]
    assert len(blob_gets) == 1 and b"\r\nRange: bytes=" in blob_gets[0], "the download was not resumed"
    assert not partial.exists() and st.has_blob(layer["digest"])
    r = cli_verify()
    assert r.returncode == 0 and "intact" in r.stdout, r.stderr


def test_killed_during_unpack(store: Path, registry: Registry) -> None:
    ref = registry.ref("debian:bookworm")
    pull_and_kill(ref, "unpacking", dict(os.environ))
    st = Store()
    diff_ids = [p.name for p in (st.root / "layers").iterdir()]
    leftovers = list((st.root / "tmp").iterdir())
    assert diff_ids == [] and len(leftovers) == 1, "a half-unpacked layer was put in place"
    assert any((leftovers[0] / "tree").iterdir()), "the unpack had not started"
    assert images.list() == []
    img = images.pull(ref)
    assert Path(img.layers[0], "etc", "os-release").is_file()
    assert list((st.root / "tmp").iterdir()) == [], "the killed pull's work was not cleaned up"
    r = cli_verify()
    assert r.returncode == 0 and "intact" in r.stdout, r.stderr
