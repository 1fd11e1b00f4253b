"""`sandbox build images/NAME`: a recipe of images/ (a build-rootfs.sh that
makes a root file system from Debian packages, and image.json) stored as a
proper one-layer OCI image under its tags, so that `Sandbox(image="debian")`
works offline.

image.json: {"tags": ["debian:bookworm", "debian:latest"], "cmd": ["/bin/bash"],
             "script": "build-rootfs.sh", "script_env": {"EXTRA_PACKAGES": "python3"}}
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from . import manifest as mf
from .errors import ImageError
from .load import CONTAINERD_NAME, load_layout
from .pull import Progress
from .reference import Reference, parse
from .registry import CHUNK
from .store import Store

PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BUILD_TIMEOUT = 1800.0


@dataclass
class Recipe:
    tags: list[str]
    cmd: list[str]
    script: str
    script_env: dict[str, str]


def _recipe(d: Path) -> Recipe:
    try:
        r = json.loads((d / "image.json").read_text())
    except (OSError, ValueError) as e:
        raise ConfigError("recipe", f"{str(d)!r}: no readable image.json ({e})") from None
    if not isinstance(r, dict):
        raise ConfigError("recipe", f"{str(d)!r}: image.json is not an object")
    tags, cmd, env = r.get("tags"), r.get("cmd", ["/bin/sh"]), r.get("script_env", {})
    if not isinstance(tags, list) or not tags or not all(isinstance(t, str) for t in tags):
        raise ConfigError("recipe", f"{str(d)!r}: image.json needs a list of tags")
    for t in tags:
        parse(t, "recipe: tags")
    if not isinstance(cmd, list) or not all(isinstance(c, str) for c in cmd):
        raise ConfigError("recipe", f"{str(d)!r}: cmd is a list of strings")
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        raise ConfigError("recipe", f"{str(d)!r}: script_env maps names to strings")
    return Recipe(tags, cmd, str(r.get("script", "build-rootfs.sh")), env)


def _no_devices(ti: tarfile.TarInfo) -> tarfile.TarInfo | None:
    # the sandbox brings its own /dev; unpack would skip them anyway
    return None if ti.ischr() or ti.isblk() else ti


def _tar(tree: Path, out: Path) -> tuple[str, int]:
    """An uncompressed layer of `tree`, numeric owners kept; (digest, size)."""
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tf:
        for name in sorted(os.listdir(tree)):
            tf.add(tree / name, arcname=name, filter=_no_devices)
    h = hashlib.sha256()
    with open(out, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return "sha256:" + h.hexdigest(), out.stat().st_size


def _put(layout: Path, data: bytes) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": "sha256:" + digest, "size": len(data)}


def build(
    recipe: str | os.PathLike[str],
    *,
    rootfs: str | os.PathLike[str] | None = None,
    store: Store | None = None,
    progress: Progress | None = None,
) -> list[Reference]:
    """Build `recipe` (or take the tree it already built, `rootfs`) and store
    it under its tags."""
    d = Path(recipe)
    r = _recipe(d)
    st = store or Store()
    with st.scratch() as tmp:
        if rootfs is not None:
            tree = Path(rootfs)
            if not (tree / "bin").exists() or not os.path.isabs(tree):
                raise ConfigError(
                    "rootfs", f"{str(tree)!r} is not an absolute path to a built root file system"
                )
        else:
            tree = tmp / "rootfs"
            script = d / r.script
            res = subprocess.run(
                ["sh", str(script), str(tree)],
                env={**os.environ, **r.script_env},
                capture_output=True,
                text=True,
                timeout=BUILD_TIMEOUT,
            )
            if res.returncode != 0 or not tree.is_dir():
                tail = (res.stdout + res.stderr)[-2000:]
                raise ImageError(f"{script}: the recipe failed (exit {res.returncode}):\n{tail}")
        lay = tmp / "layout"
        (lay / "blobs" / "sha256").mkdir(parents=True)
        diff_id, size = _tar(tree, tmp / "layer.tar")
        os.replace(tmp / "layer.tar", lay / "blobs" / "sha256" / diff_id.removeprefix("sha256:"))
        os_, arch = mf.host_platform().split("/")[:2]
        config = {
            "architecture": arch, "os": os_,
            "config": {"Env": [PATH_ENV], "Cmd": r.cmd, "WorkingDir": "/"},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created_by": f"sandbox build {d.name}"}],
        }  # fmt: skip
        cdesc = {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            **_put(lay, json.dumps(config).encode()),
        }
        layer = {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": diff_id, "size": size}
        man = {"schemaVersion": 2, "mediaType": mf.OCI_MANIFEST, "config": cdesc, "layers": [layer]}
        mdesc = {"mediaType": mf.OCI_MANIFEST, **_put(lay, json.dumps(man).encode())}
        index = [{**mdesc, "annotations": {CONTAINERD_NAME: t}} for t in r.tags]
        (lay / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": index}))
        with st.lock():
            return [ref for ref, _ in load_layout(st, lay, None, mf.host_platform(), progress)]
