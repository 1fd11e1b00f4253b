"""Pull: reference -> manifest (through the platform's entry of an index)
-> config -> layers, downloaded and unpacked concurrently, each exactly once
across processes (a lock per layer), then the image record."""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import config as _config
from . import manifest as mf
from .errors import DigestMismatch, ImageError, ImageNotFound, RegistryError
from .reference import Reference
from .registry import Client
from .store import Store, hexof, owner_tag, remove_tree, write_atomic
from .trees import summary
from .unpack import MAX_LAYER_SIZE, Budget, unpack

# progress(event, digest, done, total): event is "download", "unpack" (starts), "unpacking"
# (done = uncompressed bytes so far), "exists" (already in the store) or "done"
Progress = Callable[[str, str, int, int], None]
WORKERS = 4


class Source(Protocol):
    """Where manifests and blobs come from: a registry (registry.Client) or
    a local OCI layout / docker save tarball (load.py).  Each checks what it
    hands over against its digest and size."""

    base: str

    def manifest(self, ref: str) -> tuple[bytes, str | None, str]: ...
    def blob_bytes(self, digest: str, size: int, limit: int) -> bytes: ...
    def blob_to_file(
        self, digest: str, size: int, path: str, progress: Callable[[int], None] | None = None
    ) -> None: ...


@dataclass
class _Ctx:
    store: Store
    client: Source
    progress: Progress | None
    budget: Budget = field(default_factory=Budget)  # what the image's layers may unpack

    def tell(self, event: str, digest: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(event, digest, done, total)


def resolve(
    client: Source, lookup: str, where: str, platform: str
) -> tuple[list[tuple[bytes, str]], dict[str, Any]]:
    """[(body, digest) of the index and/or manifest], the parsed manifest."""
    body, ctype, digest = client.manifest(lookup)
    data = mf.loads(body, where)
    mt = mf.media_type(data, ctype)
    if mt in mf.DOCKER_SCHEMA1 or data.get("schemaVersion") == 1:
        raise ImageError(f"{where}: a Docker schema 1 manifest, which is not supported (push it again)")
    got = [(body, digest)]
    if mt in mf.INDEXES:
        entry = mf.select(mf.index_entries(data, where), platform, where)
        body, ctype, digest = client.manifest(entry.digest)
        data = mf.loads(body, where)
        mt = mf.media_type(data, ctype)
        got.append((body, digest))
    if mt not in mf.MANIFESTS:
        raise ImageError(f"{where}: unsupported manifest type {mt!r}")
    return got, data


def _put_blob(store: Store, digest: str, body: bytes) -> None:
    p = store.blob_path(digest)
    if not p.exists():
        write_atomic(p, body, store.root / "tmp")


def _layer(ctx: _Ctx, desc: mf.Descriptor, diff_id: str) -> None:
    st = ctx.store
    if st.has_layer(diff_id):
        ctx.tell("exists", desc.digest, desc.size, desc.size)
        return
    with st.entry_lock(f"layer-{hexof(diff_id)}"):
        if st.has_layer(diff_id):  # another process made it while we waited
            ctx.tell("exists", desc.digest, desc.size, desc.size)
            return
        blob = st.blob_path(desc.digest)
        with st.entry_lock(f"blob-{hexof(desc.digest)}"):
            if not blob.exists():
                partial = f"{blob}.partial"
                ctx.client.blob_to_file(
                    desc.digest,
                    desc.size,
                    partial,
                    lambda n: ctx.tell("download", desc.digest, n, desc.size),
                )
                os.rename(partial, blob)
        with st.scratch() as tmp:
            tree = tmp / "tree"
            tree.mkdir(mode=0o755)
            ctx.tell("unpack", desc.digest, 0, desc.size)
            stats = unpack(
                str(blob),
                str(tree),
                diff_id,
                progress=lambda n: ctx.tell("unpacking", desc.digest, n, desc.size),
                budget=ctx.budget,
            )
            info = {
                "diff_id": diff_id,
                "blob": desc.digest,
                "unpacked": time.time(),
                **summary(str(tree)),
                "whiteouts": stats.whiteouts,
                "opaque": stats.opaque,
                "skipped_devices": stats.skipped_devices,
            }
            (tmp / "layer.json").write_text(json.dumps(info, sort_keys=True))
            os.rename(tmp, st.layer_dir(diff_id))  # the layer appears whole, or not at all
    ctx.tell("done", desc.digest, desc.size, desc.size)


def _clean_dead_tmp(store: Store) -> None:
    """tmp/ entries of processes that are gone (killed mid-pull).  Pulls run
    side by side (the store lock is shared): each entry is first renamed to
    one of this process, so that only one of them removes it."""
    for p in store.leftovers(exclusive=False):
        mine = p.with_name(f"{owner_tag()}.{secrets.token_hex(6)}")
        try:
            os.rename(p, mine)
        except FileNotFoundError:
            continue  # another pull took it
        try:
            remove_tree(mine)
        except ImageError:
            continue  # not this pull's business: `sandbox gc` names what stops it


def pull_locked(
    store: Store,
    ref: Reference,
    platform: str | None = None,
    progress: Progress | None = None,
    cfg: _config.RegistryConfig | None = None,
) -> dict[str, Any]:
    """Pull with the store lock held (shared); returns the image record."""
    cfg = cfg or _config.load()
    plat = mf.check_platform(platform) if platform is not None else mf.host_platform()
    _clean_dead_tmp(store)
    errors: list[RegistryError] = []
    for base in cfg.endpoints(ref.registry):
        client = Client(base, ref.repository, cfg)
        try:
            got, data = resolve(client, ref.lookup, str(ref), plat)
            break
        except DigestMismatch:
            raise
        except RegistryError as e:
            errors.append(e)
    else:
        if len(errors) == 1:
            raise errors[0]
        kind = ImageNotFound if all(isinstance(e, ImageNotFound) for e in errors) else RegistryError
        raise kind(f"{ref}: every endpoint failed: " + "; ".join(map(str, errors)))
    return install(store, ref, client, got, data, plat, progress)


def install(
    store: Store,
    ref: Reference,
    client: Source,
    got: list[tuple[bytes, str]],
    data: dict[str, Any],
    plat: str,
    progress: Progress | None,
) -> dict[str, Any]:
    """Config, layers (fetched and unpacked concurrently) and the record of
    a resolved manifest."""
    where = str(ref)
    config_desc, layers = mf.manifest_parts(data, where)
    if store.has_blob(config_desc.digest):
        cbody = store.blob_path(config_desc.digest).read_bytes()
    else:
        cbody = client.blob_bytes(config_desc.digest, config_desc.size, mf.CONFIG_MAX)
    conf = mf.parse_config(cbody, where)
    if len(conf.diff_ids) != len(layers):
        raise ImageError(f"{where}: {len(layers)} layers but {len(conf.diff_ids)} diff_ids in the config")
    for d in layers:
        if d.size > MAX_LAYER_SIZE:
            raise ImageError(
                f"{where}: layer {d.digest} is {d.size} bytes, more than the {MAX_LAYER_SIZE} allowed"
            )
    for body, digest in got:
        _put_blob(store, digest, body)
    _put_blob(store, config_desc.digest, cbody)
    ctx = _Ctx(store, client, progress)
    if layers:
        with ThreadPoolExecutor(max_workers=min(WORKERS, len(layers))) as pool:
            futs = [pool.submit(_layer, ctx, d, di) for d, di in zip(layers, conf.diff_ids, strict=True)]
            for f in futs:
                f.result()
    rec = {
        "ref": str(ref),
        "digest": got[-1][1],
        "index": got[0][1] if len(got) > 1 else None,
        "config": config_desc.digest,
        "platform": conf.platform or plat,
        "layers": [
            {"digest": d.digest, "size": d.size, "mediaType": d.media_type, "diff_id": di}
            for d, di in zip(layers, conf.diff_ids, strict=True)
        ],
        "size": sum(d.size for d in layers),
        "pulled": time.time(),
        "source": client.base,
    }
    store.write_record(ref, rec)
    return rec
