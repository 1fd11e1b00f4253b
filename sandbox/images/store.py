"""The image store under $SANDBOX_HOME/images (or $SANDBOX_IMAGE_STORE):

    store.lock              shared by pulls and sandbox starts, exclusive for prune/rmi/gc
    blobs/sha256/HEX        verified blobs (manifests, configs, compressed layers)
    blobs/sha256/HEX.partial    a download in progress (resumed by the next try)
    layers/HEX/tree         an unpacked layer, HEX = its diff_id; layers/HEX/layer.json
    images/KEY.json         image records by reference
    holds/HEX               held (flock LOCK_SH) by running sandboxes of manifest HEX
    locks/NAME.lock         one download / one unpack per blob or layer, across processes
    tmp/PID-START.*         work in progress: renamed into place when whole; named for
                            its owner (pid and start time, as pids are reused)

Everything appears by rename(2) once it is complete, so a crash at any point
leaves only tmp/ entries and .partial files, which no reader ever uses.
Not all work holds the store lock (a build runs its recipe without it), so a
tmp/ entry is a leftover only once its owner is gone.
Reference counts are computed, not stored: a blob or layer is kept while an
image record or a held sandbox names it."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..network.state import start_time
from . import trees
from .config import sandbox_home
from .errors import ImageError
from .reference import Reference


def default_root() -> Path:
    env = os.environ.get("SANDBOX_IMAGE_STORE")
    return Path(env) if env else sandbox_home() / "images"


def hexof(digest: str) -> str:
    algo, _, h = digest.partition(":")
    if algo != "sha256" or len(h) != 64:
        raise ImageError(f"not a sha256 digest: {digest!r}")
    return h


def record_key(ref: Reference) -> str:
    return hashlib.sha256(str(ref).encode()).hexdigest()[:32]


def owner_tag() -> str:
    """PID-START of this process: how tmp/ names its work."""
    pid = os.getpid()
    return f"{pid}-{start_time(pid)}"


def owner_alive(name: str) -> bool | None:
    """Whether the process a tmp/ entry is named for still runs (the same
    process: a reused pid has another start time); None when the name
    names no owner (made by an older version)."""
    pid, sep, start = name.partition(".")[0].partition("-")
    if not (sep and pid.isdigit() and start.isdigit()):
        return None
    return start_time(int(pid)) == int(start)


def write_atomic(path: Path, data: bytes, tmpdir: Path) -> None:
    tmp = tmpdir / f"{owner_tag()}.{secrets.token_hex(4)}.{path.name}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def remove_tree(p: Path) -> None:
    """Remove a tree (of any depth) or a file of the store; ImageError when it cannot."""
    try:
        trees.remove(p)
    except OSError as e:
        where = f" (at {e.filename!r} inside)" if e.filename and str(e.filename) != str(p) else ""
        raise ImageError(f"cannot remove {str(p)!r}: {e.strerror or e}{where}; remove it by hand") from None


@dataclass
class Hold:
    """A running sandbox's claim on an image's layers (a shared flock)."""

    fd: int | None

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __del__(self) -> None:
        self.release()


class Store:
    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root is not None else default_root()
        self._made = False

    # -- layout ------------------------------------------------------------------

    def ensure(self) -> None:
        if self._made:
            return
        try:
            # 0700: layers keep set-id bits and root ownership; no host user may reach them
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            for d in ("blobs/sha256", "layers", "images", "holds", "locks", "tmp"):
                (self.root / d).mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as e:
            raise ImageError(
                f"cannot create the image store at {str(self.root)!r}: {e.strerror}; "
                "set SANDBOX_HOME or SANDBOX_IMAGE_STORE to a writable directory"
            ) from None
        self._made = True

    def blob_path(self, digest: str) -> Path:
        return self.root / "blobs" / "sha256" / hexof(digest)

    def layer_dir(self, diff_id: str) -> Path:
        return self.root / "layers" / hexof(diff_id)

    def layer_tree(self, diff_id: str) -> Path:
        return self.layer_dir(diff_id) / "tree"

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def has_layer(self, diff_id: str) -> bool:
        return (self.layer_dir(diff_id) / "layer.json").is_file()

    def tmp(self) -> Path:
        self.ensure()
        p = self.root / "tmp" / f"{owner_tag()}.{secrets.token_hex(6)}"
        p.mkdir(mode=0o700)
        return p

    @contextlib.contextmanager
    def scratch(self) -> Iterator[Path]:
        """A new tmp/ directory, removed at the end (unless the work renamed
        it into place).  Failing to remove it never hides the error that
        ended the work: it is added to that error as a note."""
        p = self.tmp()
        try:
            yield p
        except BaseException as e:
            try:
                remove_tree(p)
            except ImageError as cleanup:
                e.add_note(str(cleanup))
            raise
        remove_tree(p)

    # -- locks -------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, exclusive: bool = False, wait: bool = True) -> Iterator[bool]:
        """The store lock; with wait=False, yields False when it is busy."""
        self.ensure()
        fd = os.open(self.root / "store.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            flags = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | (0 if wait else fcntl.LOCK_NB)
            try:
                fcntl.flock(fd, flags)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def entry_lock(self, name: str) -> Iterator[None]:
        """One writer per blob or layer, across threads and processes."""
        self.ensure()
        fd = os.open(self.root / "locks" / f"{name}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # -- records -----------------------------------------------------------------

    def record_path(self, ref: Reference) -> Path:
        return self.root / "images" / f"{record_key(ref)}.json"

    def write_record(self, ref: Reference, rec: dict[str, Any]) -> None:
        self.ensure()
        write_atomic(
            self.record_path(ref), json.dumps(rec, indent=1, sort_keys=True).encode(), self.root / "tmp"
        )

    def read_record(self, ref: Reference) -> dict[str, Any] | None:
        try:
            rec = json.loads(self.record_path(ref).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise ImageError(
                f"the store's record of {ref} is unreadable ({e}); run `sandbox rmi {ref}`"
            ) from None
        return rec if isinstance(rec, dict) and rec.get("ref") == str(ref) else None

    def records(self) -> list[dict[str, Any]]:
        out = []
        d = self.root / "images"
        if not d.is_dir():
            return []
        for p in sorted(d.glob("*.json")):
            try:
                rec = json.loads(p.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(rec, dict) and isinstance(rec.get("ref"), str):
                out.append(rec)
        return out

    def remove_record(self, ref: Reference) -> bool:
        try:
            self.record_path(ref).unlink()
            return True
        except FileNotFoundError:
            return False

    def complete(self, rec: dict[str, Any]) -> bool:
        """The record's manifest, config and unpacked layers are in the store
        (a layer's compressed blob need not be: an image whose layer another
        image already unpacked never downloads it)."""
        return all(self.has_blob(b) for b in (rec["digest"], rec["config"])) and all(
            self.has_layer(x["diff_id"]) for x in rec["layers"]
        )

    # -- holds -------------------------------------------------------------------

    def hold(self, rec: dict[str, Any]) -> Hold:
        """Call with the store lock held (shared): prune cannot run between
        the lookup and the flock."""
        p = self.root / "holds" / hexof(rec["digest"])
        fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            body = json.dumps([x["diff_id"] for x in rec["layers"]] + [rec["digest"], rec["config"]]).encode()
            if os.fstat(fd).st_size != len(body):
                os.ftruncate(fd, 0)
                os.pwrite(fd, body, 0)
        except BaseException:
            os.close(fd)
            raise
        return Hold(fd)

    def _held(self) -> tuple[set[str], list[Path]]:
        """(digests and diff_ids named by held holds, unheld hold files).
        Call with the store lock held exclusively."""
        held: set[str] = set()
        stale = []
        d = self.root / "holds"
        for p in d.iterdir() if d.is_dir() else ():
            fd = os.open(p, os.O_RDWR | os.O_CLOEXEC)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    stale.append(p)
                except BlockingIOError:
                    try:
                        held.update(json.loads(os.pread(fd, 1 << 20, 0)))
                    except ValueError:
                        pass
            finally:
                os.close(fd)
        return held, stale

    # -- pruning -----------------------------------------------------------------

    def _referenced(self) -> set[str]:
        out: set[str] = set()
        for rec in self.records():
            out.update([rec["digest"], rec["config"]])
            if rec.get("index"):
                out.add(rec["index"])
            for x in rec.get("layers", []):
                out.update([x["digest"], x["diff_id"]])
        return out

    def leftovers(self, exclusive: bool = True) -> list[Path]:
        """Work a killed process left in tmp/ (.partial downloads stay: the
        next pull resumes them): entries whose owner is gone.  With the store
        lock held exclusively (no pull runs) also those that name no owner;
        with it shared, only those of an owner known to be gone."""
        d = self.root / "tmp"
        if not d.is_dir():
            return []
        out = []
        for p in sorted(d.iterdir()):
            alive = owner_alive(p.name)
            if alive is False or (alive is None and exclusive):
                out.append(p)
        return out

    def sweep(self, content: bool) -> list[str]:
        """Remove leftovers, stale holds and (with `content`) every blob and
        layer no record or held sandbox names.  Needs the exclusive lock.
        What cannot be removed does not stop the rest: an ImageError at the
        end names it."""
        removed: list[str] = []
        failed: list[str] = []

        def rm(p: Path, what: str) -> bool:
            try:
                remove_tree(p)
            except ImageError as e:
                failed.append(str(e))
                return False
            removed.append(what)
            return True

        for p in self.leftovers():
            rm(p, f"tmp/{p.name}")
        held, stale = self._held()
        for p in stale:
            p.unlink(missing_ok=True)
        if content:
            keep = self._referenced() | held
            for p in sorted((self.root / "layers").iterdir()):
                if f"sha256:{p.name}" not in keep and rm(p, f"layer sha256:{p.name}"):
                    (self.root / "locks" / f"layer-{p.name}.lock").unlink(missing_ok=True)
            for p in sorted((self.root / "blobs" / "sha256").iterdir()):
                name = p.name.removesuffix(".partial")
                if f"sha256:{name}" not in keep or p.name.endswith(".partial"):
                    p.unlink(missing_ok=True)
                    (self.root / "locks" / f"blob-{name}.lock").unlink(missing_ok=True)
                    removed.append(f"blob sha256:{p.name}")
        if failed:
            raise ImageError("; ".join(failed) + f" (removed meanwhile: {len(removed)} item(s))")
        return removed
