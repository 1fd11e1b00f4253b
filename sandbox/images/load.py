"""`sandbox load`: images from a local OCI image layout directory or a
`docker save` tarball, checked like a pull (every blob against its digest
and size, every layer against its diff_id) and stored the same way."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from ..errors import ConfigError
from . import manifest as mf
from .errors import DigestMismatch, ImageError
from .pull import Progress, install, resolve
from .reference import Reference, parse
from .registry import CHUNK, check
from .store import Store, hexof

REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"  # the full name, in docker save's index.json
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"


def _open_regular(path: Path, where: str) -> IO[bytes]:
    """A file of the layout, for reading: a FIFO there would block the read
    for good, a device read without end (a layout is downloaded content)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ImageError(f"{where}: {path.name} is not a regular file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


class LayoutSource:
    """The blobs of an OCI image layout (blobs/sha256/HEX), verified as read."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.base = f"oci:{root}"

    def _path(self, digest: str) -> Path:
        return self.root / "blobs" / "sha256" / hexof(digest)

    def _read(self, digest: str, limit: int) -> bytes:
        try:
            with _open_regular(self._path(digest), self.base) as f:
                data = f.read(limit + 1)
        except FileNotFoundError:
            raise ImageError(f"{self.base}: no blob {digest} in the layout") from None
        if len(data) > limit:
            raise ImageError(f"{self.base}: blob {digest} is larger than {limit} bytes")
        return data

    def manifest(self, ref: str) -> tuple[bytes, str | None, str]:
        body = self._read(ref, mf.MANIFEST_MAX)
        got = "sha256:" + hashlib.sha256(body).hexdigest()
        if got != ref:
            raise DigestMismatch(f"{self.base}: manifest {ref}: the content's digest is {got}")
        return body, None, ref

    def blob_bytes(self, digest: str, size: int, limit: int) -> bytes:
        body = self._read(digest, limit)
        check("sha256:" + hashlib.sha256(body).hexdigest(), len(body), digest, size)
        return body

    def blob_to_file(
        self, digest: str, size: int, path: str, progress: Callable[[int], None] | None = None
    ) -> None:
        h, n = hashlib.sha256(), 0
        try:
            with _open_regular(self._path(digest), self.base) as src, open(path, "wb") as dst:
                while (chunk := src.read(CHUNK)) and n <= size:
                    h.update(chunk)
                    dst.write(chunk)
                    n += len(chunk)
                    if progress is not None:
                        progress(n)
            check("sha256:" + h.hexdigest(), n, digest, size)
        except FileNotFoundError:
            Path(path).unlink(missing_ok=True)  # not made if the blob was missing
            raise ImageError(f"{self.base}: no blob {digest} in the layout") from None
        except DigestMismatch:
            os.unlink(path)
            raise


def _ref_of(entry: dict[str, Any], name: str | None, where: str) -> Reference:
    ann = entry.get("annotations") if isinstance(entry.get("annotations"), dict) else {}
    full, tag = ann.get(CONTAINERD_NAME), ann.get(REF_NAME)  # type: ignore[union-attr]
    if isinstance(full, str):
        return parse(full, "name")
    if isinstance(tag, str) and ("/" in tag or ":" in tag):
        return parse(tag, "name")
    if name is not None:
        return parse(f"{name}:{tag}" if isinstance(tag, str) else name, "name")
    raise ConfigError(
        "name",
        f"{where} names an image only {tag!r}: give the repository, e.g. sandbox load --name myapp PATH",
    )


def load_layout(
    st: Store, root: Path, name: str | None, plat: str, progress: Progress | None
) -> list[tuple[Reference, dict[str, Any]]]:
    """Every tagged image of the layout (call with the store lock held)."""
    where = str(root)
    try:
        with _open_regular(root / "index.json", where) as f:
            body = f.read(mf.MANIFEST_MAX + 1)
        if len(body) > mf.MANIFEST_MAX:
            raise ImageError(f"{where}: index.json is larger than {mf.MANIFEST_MAX} bytes")
        data = mf.loads(body, f"{where}/index.json")
    except OSError as e:
        raise ConfigError("path", f"{where}: not an OCI image layout ({e.strerror} for index.json)") from None
    raw = data.get("manifests")
    descs = mf.index_entries(data, where)
    assert isinstance(raw, list)
    src = LayoutSource(root)
    out = []
    for entry, desc in zip(raw, descs, strict=True):
        ref = _ref_of(entry, name, where)
        got, man = resolve(src, desc.digest, str(ref), plat)
        out.append((ref, install(st, ref, src, got, man, plat, progress)))
    if not out:
        raise ImageError(f"{where}: the layout's index.json lists no image")
    return out


def _member(tf: tarfile.TarFile, name: object, where: str) -> IO[bytes]:
    if not isinstance(name, str):
        raise ImageError(f"{where}: manifest.json names a member {name!r}")
    try:
        f = tf.extractfile(name)
    except KeyError:
        f = None
    if f is None:
        raise ImageError(f"{where}: manifest.json names {name!r}, which is not a file of the tarball")
    return f


def _put(out: Path, f: IO[bytes]) -> dict[str, Any]:
    """Copy a member into the layout's blobs; its descriptor."""
    tmp = out / "blobs" / "incoming"
    h, n = hashlib.sha256(), 0
    with open(tmp, "wb") as dst:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            dst.write(chunk)
            n += len(chunk)
    os.replace(tmp, out / "blobs" / "sha256" / h.hexdigest())
    return {"digest": "sha256:" + h.hexdigest(), "size": n}


def docker_save_to_layout(path: Path, out: Path) -> None:
    """A `docker save` tarball (manifest.json: Config, RepoTags, Layers) as
    an OCI layout at `out`, its images named by their RepoTags."""
    where = str(path)
    (out / "blobs" / "sha256").mkdir(parents=True)
    try:
        tf = tarfile.open(path)  # noqa: SIM115 - closed by the with just below
    except (OSError, tarfile.TarError) as e:
        raise ConfigError("path", f"{where}: neither a layout directory nor a tarball ({e})") from None
    with tf:
        entries = json.loads(_member(tf, "manifest.json", where).read(mf.MANIFEST_MAX))
        if not isinstance(entries, list):
            raise ImageError(f"{where}: manifest.json is not a list")
        index = []
        for entry in entries:
            if not isinstance(entry, dict) or not isinstance(entry.get("Layers"), list):
                raise ImageError(f"{where}: a manifest.json entry without Layers")
            cfg = {"mediaType": DOCKER_CONFIG, **_put(out, _member(tf, entry.get("Config"), where))}
            layers = []
            for name in entry["Layers"]:
                d = _put(out, _member(tf, name, where))
                with open(out / "blobs" / "sha256" / hexof(d["digest"]), "rb") as f:
                    gz = f.read(2) == b"\x1f\x8b"
                layers.append(
                    {
                        "mediaType": "application/vnd.docker.image.rootfs.diff.tar" + (".gzip" if gz else ""),
                        **d,
                    }
                )
            man = json.dumps(
                {"schemaVersion": 2, "mediaType": mf.DOCKER_MANIFEST, "config": cfg, "layers": layers}
            )
            digest = "sha256:" + hashlib.sha256(man.encode()).hexdigest()
            (out / "blobs" / "sha256" / hexof(digest)).write_text(man)
            desc = {"mediaType": mf.DOCKER_MANIFEST, "digest": digest, "size": len(man.encode())}
            for tag in entry.get("RepoTags") or [None]:
                ann = {CONTAINERD_NAME: tag} if isinstance(tag, str) else {}
                index.append({**desc, "annotations": ann})
    (out / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": index}))


def load(
    path: str | os.PathLike[str],
    *,
    name: str | None = None,
    platform: str | None = None,
    store: Store | None = None,
    progress: Progress | None = None,
) -> list[Reference]:
    """Load every image of an OCI layout directory or a docker save tarball;
    `name` gives the repository when the layout names only tags."""
    p = Path(path)
    if not p.exists():
        raise ConfigError("path", f"{str(p)!r} does not exist")
    plat = mf.check_platform(platform) if platform is not None else mf.host_platform()
    st = store or Store()
    with st.lock():
        if p.is_dir():
            return [ref for ref, _ in load_layout(st, p, name, plat, progress)]
        with st.scratch() as tmp:
            docker_save_to_layout(p, tmp / "layout")
            return [ref for ref, _ in load_layout(st, tmp / "layout", name, plat, progress)]
