"""What the store's cleanups do with a tree they cannot simply delete: a
mount left inside a tmp/ entry (a recipe killed inside mmdebstrap leaves its
/proc mounted there, or a bind of a host directory).  shutil.rmtree, which
the cleanups used, deleted the mounted files themselves."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require

pytestmark = pytest.mark.integration

# In a private mount namespace of its own: the mount goes with the child.
CHILD = """
import subprocess, sys
from sandbox import images
from sandbox.images.errors import ImageError
from sandbox.images.store import Store
st = Store(sys.argv[1])
st.ensure()
left = st.root / "tmp" / "99999999.killed"  # a dead process's
(left / "rootfs" / "mnt").mkdir(parents=True)
(left / "rootfs" / "junk").write_text("junk")
subprocess.run(["mount", "-t", "tmpfs", "none", str(left / "rootfs" / "mnt")], check=True)
(left / "rootfs" / "mnt" / "host-file").write_text("keep me")
try:
    print("gc:", images.gc(store=st))
except ImageError as e:
    print("error:", e)
print("junk left:", (left / "rootfs" / "junk").exists())
print("kept:", (left / "rootfs" / "mnt" / "host-file").read_text())
"""


def test_gc_does_not_remove_what_is_mounted_inside(tmp_path: Path) -> None:
    require(os.geteuid() == 0 and shutil.which("unshare"), "needs root and unshare(1) (a mount namespace)")
    r = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", sys.executable, "-c", CHILD, str(tmp_path / "s")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert "error: cannot remove" in r.stdout, r.stdout
    assert "another file system is mounted there (at 'mnt' inside)" in r.stdout, r.stdout
    assert "junk left: False" in r.stdout and "kept: keep me" in r.stdout, r.stdout
