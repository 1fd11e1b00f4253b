"""The store's reference counting: prune and rmi keep what another image or
a running sandbox (a Hold) uses, and remove what a killed pull left."""

from __future__ import annotations

import errno
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox import images
from sandbox.images import trees
from sandbox.images.errors import ImageError, ImageNotFound
from sandbox.images.pull import _clean_dead_tmp
from sandbox.images.reference import parse
from sandbox.images.store import Store


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
    (st.layer_dir(diff_id) / "layer.json").write_text(json.dumps(trees.summary(str(tree))))
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


def test_gc_keeps_the_work_of_a_live_process(st: Store) -> None:
    """Found by review: gc removed a running `sandbox build`'s tmp/ tree (the
    recipe runs without the store lock).  Only a dead owner's work goes, and
    a reused pid is not its owner (another start time)."""
    mine = st.tmp()
    (mine / "rootfs").mkdir()
    reused = st.root / "tmp" / f"{os.getpid()}-1.abc"  # our pid, another process's start time
    reused.mkdir()
    assert images.gc(store=st) == [f"tmp/{reused.name}"]
    assert (mine / "rootfs").is_dir()
    reused.mkdir()
    _clean_dead_tmp(st)  # what a pull does first, with the store lock shared
    assert os.listdir(st.root / "tmp") == [mine.name]


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


DEEP = 1500  # levels: past Python's recursion limit, which os.walk and shutil.rmtree (3.11) hit


def deep_tree(top: Path, levels: int = DEEP) -> None:
    """top/a/a/.../a/f, made one level at a time (Path.mkdir(parents=True) recurses too)."""
    top.mkdir()
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(levels):
            os.mkdir("a", dir_fd=fd)
            sub = os.open("a", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = sub
        os.close(os.open("f", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd))
        os.write(sub := os.open("g", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd), b"12345")
        os.close(sub)
    finally:
        os.close(fd)


@pytest.fixture
def deep(st: Store) -> Iterator[Path]:
    """A killed process's deep tree in tmp/ (an older version unpacked it,
    or a recipe built it); removed at the end whatever the test did."""
    p = st.root / "tmp" / "99999999-1.deep"  # the owner: pid 99999999, gone
    deep_tree(p)
    yield p
    trees.remove(p)


def test_deep_tree_summary_and_removal(st: Store, deep: Path) -> None:
    assert trees.summary(str(deep)) == {"entries": DEEP + 2, "bytes": 5}
    trees.remove(deep)
    assert not deep.exists()


def test_gc_removes_a_deep_leftover(st: Store, deep: Path) -> None:
    """Found by review: the leftover raised RecursionError in gc, and stayed."""
    assert images.gc(store=st) == [f"tmp/{deep.name}"]
    assert os.listdir(st.root / "tmp") == []


def test_pull_removes_a_deep_leftover(st: Store, deep: Path) -> None:
    """Found by review: every later pull raised RecursionError cleaning it."""
    _clean_dead_tmp(st)
    assert os.listdir(st.root / "tmp") == []


def test_a_failed_cleanup_does_not_hide_the_error(st: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(p: object, dir_fd: object = None) -> None:
        raise OSError(errno.EBUSY, "Device or resource busy", "x")

    monkeypatch.setattr(trees, "remove", refuse)
    with pytest.raises(ValueError, match="the work failed") as e, st.scratch():
        raise ValueError("the work failed")
    assert any("cannot remove" in n and "busy" in n for n in e.value.__notes__)
    busy = r"cannot remove .*: Device or resource busy \(at 'x' inside\)"
    with pytest.raises(ImageError, match=busy), st.scratch():
        pass
