"""`sandbox build images/NAME`: a recipe of images/ stored as an OCI image
under its tags, then run offline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox import Sandbox, images
from sandbox.errors import ConfigError
from tests.conftest import PROJECT, require_sandbox_host, sh_ok

pytestmark = pytest.mark.integration


def test_build_from_a_built_tree(store: Path, busybox_rootfs: Path) -> None:
    refs = images.build(PROJECT / "images" / "busybox", rootfs=busybox_rootfs)
    assert [r.familiar() for r in refs] == ["busybox:latest", "busybox:1.35"]
    assert images.verify() == []
    require_sandbox_host()
    with Sandbox(image="busybox:1.35") as sb:
        assert sb.image is not None and sb.image.argv() == ["/bin/sh"]
        assert sh_ok(sb, "busybox | head -1").startswith("BusyBox v1.35")


def test_build_runs_the_recipe(store: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "sandbox.cli", "build", str(PROJECT / "images" / "busybox")],
                       capture_output=True, text=True, timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("built busybox:latest, busybox:1.35 in ")
    assert {x["ref"] for x in images.list()} == {
        "docker.io/library/busybox:latest",
        "docker.io/library/busybox:1.35",
    }


def test_bad_recipes(store: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no readable image\.json"):
        images.build(tmp_path)
    (tmp_path / "image.json").write_text(json.dumps({"tags": ["Bad"]}))
    with pytest.raises(ConfigError, match="bad name component 'Bad'"):
        images.build(tmp_path)


def test_gc_during_a_build_keeps_its_work(store: Path, tmp_path: Path) -> None:
    """Found by review: `sandbox gc` while a recipe ran removed the build's
    tmp/ tree (a recipe runs without the store lock, and gc took every tmp/
    entry for a dead process's).  This recipe runs gc itself, half-way."""
    (tmp_path / "image.json").write_text(
        json.dumps({"tags": ["gc-during-build:1"], "script_env": {"PYTHON": sys.executable}})
    )
    (tmp_path / "build-rootfs.sh").write_text(
        'set -e\nmkdir -p "$1/bin"\necho made > "$1/bin/made"\n'
        '"$PYTHON" -c "from sandbox import images; print(images.gc())"\n'
        'cat "$1/bin/made"\n'
    )
    refs = images.build(tmp_path)
    assert [r.familiar() for r in refs] == ["gc-during-build:1"]
    assert images.verify() == []
