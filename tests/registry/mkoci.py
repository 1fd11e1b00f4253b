#!/usr/bin/env python3
"""Writes the test images as OCI image layouts, by hand (tar + sha256 +
JSON), so that every byte (media types, whiteouts, platforms) is ours:

  mkoci.py small LAYOUT           busybox:{latest,zstd,uncompressed}, whiteout:latest,
                                  multiarch:latest (index: arm64/v8 dummy, amd64), many:latest (64 layers)
  mkoci.py rootfs LAYOUT TAG... < ROOTFS.tar    a one-layer image of a rootfs tar (gzip)
  mkoci.py record ADDR OUT REF... the digests a registry serves, as JSON (tests read them)

Reproducible: fixed times, uid/gid 0, gzip mtime 0, sorted compact JSON."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import urllib.request

CREATED = "2024-01-01T00:00:00Z"
MTIME = 1704067200
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = {
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
    "none": "application/vnd.oci.image.layer.v1.tar",
}
ACCEPT = (
    f"{OCI_INDEX}, application/vnd.docker.distribution.manifest.list.v2+json, {OCI_MANIFEST}, "
    "application/vnd.docker.distribution.manifest.v2+json"
)


def jbytes(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


class Layout:
    def __init__(self, path: str) -> None:
        self.path = path
        os.makedirs(os.path.join(path, "blobs", "sha256"), exist_ok=True)
        with open(os.path.join(path, "oci-layout"), "w") as f:
            f.write('{"imageLayoutVersion":"1.0.0"}')
        self.refs: list[dict] = []
        if os.path.exists(os.path.join(path, "index.json")):
            with open(os.path.join(path, "index.json")) as f:
                self.refs = json.load(f)["manifests"]

    def put(self, data: bytes, media_type: str, **extra: object) -> dict:
        digest = hashlib.sha256(data).hexdigest()
        with open(os.path.join(self.path, "blobs", "sha256", digest), "wb") as f:
            f.write(data)
        return {"mediaType": media_type, "digest": "sha256:" + digest, "size": len(data), **extra}

    def tag(self, name: str, desc: dict) -> None:
        key = "org.opencontainers.image.ref.name"
        self.refs = [r for r in self.refs if r.get("annotations", {}).get(key) != name]
        self.refs.append({**desc, "annotations": {key: name}})

    def save(self) -> None:
        with open(os.path.join(self.path, "index.json"), "wb") as f:
            f.write(jbytes({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": self.refs}))


def tar_layer(entries: list[tuple]) -> bytes:
    """entries: (kind, path, mode, payload) with kind dir/file/symlink/hardlink."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for kind, path, mode, payload in entries:
            ti = tarfile.TarInfo(path)
            ti.mode, ti.mtime, ti.uid, ti.gid, ti.uname, ti.gname = mode, MTIME, 0, 0, "root", "root"
            data = None
            if kind == "dir":
                ti.type = tarfile.DIRTYPE
            elif kind == "file":
                payload = payload if isinstance(payload, bytes) else payload.encode()
                ti.size, data = len(payload), io.BytesIO(payload)
            elif kind == "symlink":
                ti.type, ti.linkname = tarfile.SYMTYPE, payload
            else:
                ti.type, ti.linkname = tarfile.LNKTYPE, payload
            t.addfile(ti, data)
    return buf.getvalue()


def layer(lay: Layout, raw: bytes, how: str = "gzip") -> tuple[dict, str]:
    if how == "gzip":
        blob = gzip.compress(raw, 9, mtime=0)
    elif how == "zstd":
        blob = subprocess.run(["zstd", "-q", "-c", "-19"], input=raw, capture_output=True, check=True).stdout
    else:
        blob = raw
    return lay.put(blob, LAYER[how]), "sha256:" + hashlib.sha256(raw).hexdigest()


def image(
    lay: Layout,
    layers: list[tuple[dict, str]],
    arch: str = "amd64",
    variant: str | None = None,
    cmd: tuple[str, ...] = ("/bin/sh",),
    extra: dict | None = None,
) -> dict:
    cfg: dict = {
        "created": CREATED,
        "architecture": arch,
        "os": "linux",
        "config": {"Env": [PATH_ENV], "Cmd": list(cmd), "WorkingDir": "/", **(extra or {})},
        "rootfs": {"type": "layers", "diff_ids": [di for _, di in layers]},
    }
    plat = {"architecture": arch, "os": "linux"}
    if variant:
        cfg["variant"] = plat["variant"] = variant
    man = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": lay.put(jbytes(cfg), OCI_CONFIG),
        "layers": [d for d, _ in layers],
    }
    return lay.put(jbytes(man), OCI_MANIFEST, platform=plat)


def busybox() -> list[tuple]:
    bb = "/bin/busybox"
    with open(bb, "rb") as f:
        binary = f.read()
    ents = [
        ("dir", d, 0o755, None) for d in ("bin", "dev", "etc", "proc", "sbin", "usr", "usr/bin", "usr/sbin")
    ]
    ents += [
        ("dir", "tmp", 0o1777, None),
        ("dir", "root", 0o700, None),
        ("file", "bin/busybox", 0o755, binary),
        ("file", "etc/passwd", 0o644, "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n"),
        ("file", "etc/group", 0o644, "root:x:0:\nnogroup:x:65534:\n"),
    ]
    applets = subprocess.run([bb, "--list-full"], capture_output=True, text=True, check=True).stdout.split()
    for a in sorted(applets):
        if a != "bin/busybox" and a.split("/")[0] in ("bin", "sbin", "usr"):
            ents.append(("symlink", a, 0o777, "/bin/busybox"))
    return ents


def small(path: str) -> None:
    lay = Layout(path)
    raw = tar_layer(busybox())
    for tag, how in (("busybox:latest", "gzip"), ("busybox:zstd", "zstd"), ("busybox:uncompressed", "none")):
        lay.tag(tag, image(lay, [layer(lay, raw, how)]))
    base = [
        *busybox(),
        ("dir", "data", 0o755, None),
        ("file", "data/keep.txt", 0o644, "keep v1\n"),
        ("file", "data/changed.txt", 0o644, "changed v1\n"),
        ("file", "data/remove-me.txt", 0o644, "x\n"),
        ("hardlink", "data/hardlink-to-keep", 0o644, "data/keep.txt"),
        ("dir", "gone-dir", 0o755, None),
        ("file", "gone-dir/x.txt", 0o644, "x\n"),
        ("dir", "opaque", 0o755, None),
        ("file", "opaque/old-a.txt", 0o644, "old\n"),
        ("dir", "opaque/sub", 0o755, None),
        ("file", "opaque/sub/old-b.txt", 0o644, "old\n"),
    ]
    top = [
        ("dir", "data", 0o755, None),
        ("file", "data/.wh.remove-me.txt", 0o644, b""),
        ("file", "data/changed.txt", 0o644, "changed v2\n"),
        ("file", "data/added.txt", 0o644, "added\n"),
        ("file", ".wh.gone-dir", 0o644, b""),
        ("dir", "opaque", 0o755, None),
        ("file", "opaque/.wh..wh..opq", 0o644, b""),
        ("file", "opaque/new.txt", 0o644, "new\n"),
    ]
    # its config also tests the defaults a sandbox takes: Env, WorkingDir, Entrypoint + Cmd
    extra = {
        "Env": [PATH_ENV, "GREETING=from-image"],
        "WorkingDir": "/data",
        "Entrypoint": ["/bin/sh", "-c"],
        "Cmd": ["echo entry in $PWD: $GREETING"],
    }
    lay.tag(
        "whiteout:latest", image(lay, [layer(lay, tar_layer(base)), layer(lay, tar_layer(top))], extra=extra)
    )
    bbl = layer(lay, raw)
    amd64 = image(lay, [bbl, layer(lay, tar_layer([("file", "ARCH", 0o644, "amd64\n")]))])
    arm64 = image(
        lay, [layer(lay, tar_layer([("file", "ARCH", 0o644, "arm64\n")]))], arch="arm64", variant="v8"
    )
    lay.tag(
        "multiarch:latest",
        lay.put(jbytes({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [arm64, amd64]}), OCI_INDEX),
    )
    many = [bbl] + [
        layer(lay, tar_layer([("dir", "layers", 0o755, None), ("file", f"layers/{i:03d}", 0o644, f"{i}\n")]))
        for i in range(1, 64)
    ]
    lay.tag("many:latest", image(lay, many))
    lay.save()


def rootfs(path: str, tags: list[str]) -> None:
    """stdin: a rootfs tar; gzipped and hashed as it streams."""
    lay = Layout(path)
    tmp = os.path.join(path, "layer.tmp")
    raw_h = hashlib.sha256()
    with open(tmp, "wb") as out, gzip.GzipFile(fileobj=out, mode="wb", compresslevel=6, mtime=0) as gz:
        while chunk := sys.stdin.buffer.read(1 << 20):
            raw_h.update(chunk)
            gz.write(chunk)
    with open(tmp, "rb") as f:
        h = hashlib.sha256()
        while chunk := f.read(1 << 20):
            h.update(chunk)
    size = os.path.getsize(tmp)
    os.replace(tmp, os.path.join(path, "blobs", "sha256", h.hexdigest()))
    desc = {"mediaType": LAYER["gzip"], "digest": "sha256:" + h.hexdigest(), "size": size}
    man = image(lay, [(desc, "sha256:" + raw_h.hexdigest())], cmd=("/bin/bash",))
    for t in tags:
        lay.tag(t, man)
    lay.save()


def record(addr: str, out: str, refs: list[str]) -> None:
    res = {}
    for ref in refs:
        name, tag = ref.rsplit(":", 1)
        req = urllib.request.Request(f"http://{addr}/v2/{name}/manifests/{tag}", headers={"Accept": ACCEPT})
        with urllib.request.urlopen(req) as r:
            m = json.load(r)
            e: dict = {"digest": r.headers["Docker-Content-Digest"], "mediaType": r.headers["Content-Type"]}
        if "manifests" in m:
            e["platforms"] = {
                "/".join(
                    x
                    for x in (
                        d["platform"]["os"],
                        d["platform"]["architecture"],
                        d["platform"].get("variant"),
                    )
                    if x
                ): d["digest"]
                for d in m["manifests"]
            }
        else:
            e["config"] = m["config"]["digest"]
            e["layers"] = [{"digest": x["digest"], "size": x["size"]} for x in m["layers"]]
        res[ref] = e
    with open(out + ".tmp", "w") as f:
        json.dump({"registry": addr, "images": res}, f, indent=1, sort_keys=True)
    os.replace(out + ".tmp", out)


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "small":
        tmp = args[0] + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        small(tmp)
        shutil.rmtree(args[0], ignore_errors=True)
        os.replace(tmp, args[0])
    elif cmd == "rootfs":
        rootfs(args[0], args[1:])
    elif cmd == "record":
        record(args[0], args[1], args[2:])
    else:
        sys.exit(__doc__)
