"""OCI images: references, a registry client, a content-addressed store of
verified blobs and unpacked layers, and what a sandbox needs from an image.

    from sandbox import images
    img = images.pull("debian:bookworm")      # verified, unpacked, recorded
    images.list()                             # what the store holds
    images.remove("debian:bookworm"); images.prune(); images.verify()
    images.load("image.tar")                  # docker save tarball or OCI layout dir

`Sandbox(image="debian")` pulls when the image is missing and otherwise
makes no request at all."""

from __future__ import annotations

import hashlib
import json
import os
import sys as _sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from . import manifest as _mf
from .build import build
from .errors import DigestMismatch, ImageError, ImageNotFound, PlatformNotFound, RegistryError, UnsafeLayer
from .load import load
from .pull import Progress, pull_locked
from .reference import Reference, parse
from .store import Hold, Store
from .trees import summary

__all__ = [
    "DigestMismatch",
    "Hold",
    "Image",
    "ImageError",
    "ImageNotFound",
    "PlatformNotFound",
    "Reference",
    "RegistryError",
    "Store",
    "UnsafeLayer",
    "build",
    "gc",
    "list",
    "load",
    "open_image",
    "parse",
    "prune",
    "pull",
    "remove",
    "verify",
]

_list = list


@dataclass(frozen=True)
class Image:
    ref: Reference
    digest: str  # of the platform's manifest
    layers: tuple[str, ...]  # unpacked layer directories, lowest first
    config: _mf.ImageConfig
    size: int  # compressed bytes of the layers

    def argv(self, command: Sequence[str] | None = None) -> _list[str]:
        """What `docker run IMAGE [COMMAND]` runs: Entrypoint, then the
        command or else the image's Cmd."""
        tail = _list(command) if command else _list(self.config.cmd or ())
        return _list(self.config.entrypoint or ()) + tail


def _image(store: Store, ref: Reference, rec: dict[str, Any]) -> Image:
    conf = _mf.parse_config(store.blob_path(rec["config"]).read_bytes(), str(ref))
    return Image(
        ref=ref,
        digest=rec["digest"],
        layers=tuple(str(store.layer_tree(x["diff_id"])) for x in rec["layers"]),
        config=conf,
        size=int(rec.get("size", 0)),
    )


def pull(
    ref: str, *, platform: str | None = None, store: Store | None = None, progress: Progress | None = None
) -> Image:
    """Pull `ref` (always asking the registry what the tag names now)."""
    r = parse(ref)
    st = store or Store()
    with st.lock():
        rec = pull_locked(st, r, platform, progress)
    return _image(st, r, rec)


def open_image(
    ref: str, *, platform: str | None = None, store: Store | None = None, progress: Progress | None = None
) -> tuple[Image, Hold]:
    """The image for a sandbox, pulled only when the store lacks it, and a
    Hold that keeps its layers from `prune`/`remove` until released."""
    r = parse(ref)
    st = store or Store()
    with st.lock():
        rec = local_or_pull(st, r, platform, progress)
        hold = st.hold(rec)
    try:
        return _image(st, r, rec), hold
    except BaseException:
        hold.release()
        raise


def local_or_pull(
    st: Store, r: Reference, platform: str | None = None, progress: Progress | None = None
) -> dict[str, Any]:
    """The record of `r`: the store's when whole (no request at all), else
    pulled.  Call with the store lock held."""
    rec = st.read_record(r)
    if rec is None or not st.complete(rec) or (platform is not None and rec.get("platform") != platform):
        rec = pull_locked(st, r, platform, progress)
    return rec


def list(store: Store | None = None) -> _list[dict[str, Any]]:
    """The image records: ref, digest, platform, size, layers."""
    st = store or Store()
    if not st.root.is_dir():
        return []
    return sorted(st.records(), key=lambda r: str(r["ref"]))


def remove(ref: str, store: Store | None = None) -> _list[str]:
    """Forget `ref`, and delete what no other image or running sandbox uses."""
    r = parse(ref)
    st = store or Store()
    _closed_sandboxes_gone()
    with st.lock(exclusive=True):
        if not st.remove_record(r):
            raise ImageNotFound(f"{r}: no such image in the store ({st.root}); see `sandbox images`")
        return [str(r), *st.sweep(content=True)]


def prune(store: Store | None = None) -> _list[str]:
    """Delete every blob and layer no image or running sandbox uses, and
    what interrupted pulls left."""
    st = store or Store()
    _closed_sandboxes_gone()
    with st.lock(exclusive=True):
        return st.sweep(content=True)


def _closed_sandboxes_gone() -> None:
    """Sandboxes this process closed release their images once they are gone
    (sandbox/reaper.py): wait for that, so that their layers may go now."""
    reaper = _sys.modules.get("sandbox.reaper")
    if reaper is not None:
        reaper.drain()


def gc(store: Store | None = None) -> _list[str]:
    """The image part of `sandbox gc`: what killed pulls left (tmp/ work,
    stale holds).  Skipped, and said so, while a pull or a start holds the store."""
    st = store or Store()
    if not st.root.is_dir():
        return []
    with st.lock(exclusive=True, wait=False) as got:
        if not got:
            return ["images: the store is busy (a pull runs); nothing removed"]
        return st.sweep(content=False)


def verify(store: Store | None = None) -> _list[str]:
    """Check the store: every blob against its digest, every record whole,
    every layer against the summary taken when it was unpacked.  Returns the
    problems found (empty: intact)."""
    st = store or Store()
    problems: _list[str] = []
    if not st.root.is_dir():
        return problems
    with st.lock():
        bdir = st.root / "blobs" / "sha256"
        for p in sorted(bdir.iterdir()):
            if p.name.endswith(".partial"):
                continue
            h = hashlib.sha256()
            with open(p, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
            if h.hexdigest() != p.name:
                problems.append(f"blob sha256:{p.name}: content hashes to sha256:{h.hexdigest()}")
        for rec in st.records():
            if not st.complete(rec):
                problems.append(f"image {rec['ref']}: a blob or layer is missing")
        for d in sorted((st.root / "layers").iterdir()):
            try:
                info = json.loads((d / "layer.json").read_text())
            except (OSError, ValueError):
                problems.append(f"layer sha256:{d.name}: no readable layer.json")
                continue
            try:
                now = summary(str(d / "tree"))
            except OSError as e:
                problems.append(f"layer sha256:{d.name}: the tree cannot be read ({e.strerror or e})")
                continue
            if now != {"entries": info.get("entries"), "bytes": info.get("bytes")}:
                problems.append(
                    f"layer sha256:{d.name}: the tree has changed ({now}, unpacked as "
                    f"{info.get('entries')} entries, {info.get('bytes')} bytes)"
                )
        if not os.access(st.root, os.W_OK):
            problems.append(f"{st.root}: not writable")
    return problems
