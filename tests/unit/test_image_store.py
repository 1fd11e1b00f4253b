"""The store's reference counting: prune and rmi keep what another image or
a running sandbox (a Hold) uses, and remove what a killed pull left."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from sandbox import images
from sandbox.images.errors import ImageNotFound
from sandbox.images.reference import parse
from sandbox.images.store import Store, tree_summary


def blob(st: Store, data: bytes) -> str:
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    st.blob_path(d).write_bytes(data)
    return d


def layer(st: Store, name: str) -> str:
    diff_id = "sha256:" + hashlib.sha256(name.encode()).hexdigest()
    tree = st.layer_tree(diff_id)
    if tree.exists():  # shared with an earlier image
        return diff_id
    tree.mkdir(parents=True)
    (tree / name).write_text(name)
    (st.layer_dir(diff_id) / "layer.json").write_text(json.dumps(tree_summary(str(tree))))
    return diff_id


def image(st: Store, ref: str, layer_names: list[str]) -> dict[str, object]:
    layers = []
    for n in layer_names:
        layers.append(
            {"digest": blob(st, f"gz-{n}".encode()), "diff_id": layer(st, n), "size": 1, "mediaType": "x"}
        )
    cfg = blob(st, json.dumps({"rootfs": {"diff_ids": [x["diff_id"] for x in layers]}}).encode())
    rec = {
        "ref": str(parse(ref)),
        "digest": blob(st, f"manifest {ref}".encode()),
        "config": cfg,
        "layers": layers,
    }
    st.write_record(parse(ref), rec)
    return rec


@pytest.fixture
def st(tmp_path: Path) -> Store:
    s = Store(tmp_path / "store")
    s.ensure()
    return s


def layers_left(st: Store) -> int:
    return len(os.listdir(st.root / "layers"))


def test_shared_layer_survives_rmi(st: Store) -> None:
    image(st, "a:1", ["base", "a"])
    image(st, "b:1", ["base", "b"])
    removed = images.remove("a:1", store=st)
    assert any(r.startswith("layer ") for r in removed)
    assert layers_left(st) == 2  # base (used by b) and b
    assert images.verify(st) == []
    with pytest.raises(ImageNotFound, match="no such image"):
        images.remove("a:1", store=st)


def test_hold_keeps_layers_until_released(st: Store) -> None:
    rec = image(st, "a:1", ["base", "a"])
    with st.lock():
        hold = st.hold(rec)
    images.remove("a:1", store=st)
    assert layers_left(st) == 2, "a running sandbox's layers were removed"
    assert images.prune(store=st) == []
    hold.release()
    assert len(images.prune(store=st)) >= 2
    assert layers_left(st) == 0
    assert os.listdir(st.root / "holds") == []


def test_gc_and_prune_remove_leftovers(st: Store) -> None:
    image(st, "a:1", ["base"])
    (st.root / "tmp" / "12345.abc" / "tree").mkdir(parents=True)  # a killed unpack
    (st.root / "blobs" / "sha256" / ("f" * 64 + ".partial")).write_bytes(b"half")
    assert images.gc(store=st) == ["tmp/12345.abc"]
    assert images.prune(store=st) == [f"blob sha256:{'f' * 64}.partial"]
    assert layers_left(st) == 1 and images.verify(st) == []


def test_gc_skips_a_busy_store(st: Store) -> None:
    with st.lock():
        assert images.gc(store=st) == ["images: the store is busy (a pull runs); nothing removed"]


def test_verify_finds_damage(st: Store) -> None:
    rec = image(st, "a:1", ["base"])
    d = rec["digest"]
    assert isinstance(d, str)
    st.blob_path(d).write_bytes(b"flipped")
    diff_id = rec["layers"][0]["diff_id"]  # type: ignore[index]
    (st.layer_tree(diff_id) / "extra").write_text("planted")
    problems = images.verify(st)
    assert any(p.startswith(f"blob {d}: content hashes to") for p in problems)
    assert any("the tree has changed" in p for p in problems)


def test_list(st: Store) -> None:
    image(st, "b:1", ["x"])
    image(st, "a:1", ["x"])
    assert [r["ref"] for r in images.list(st)] == ["docker.io/library/a:1", "docker.io/library/b:1"]
