"""The image commands of `sandbox`: pull (with a progress display), images
[--verify], rmi, prune, load, build."""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from typing import TextIO

from . import Store, build, list, load, parse, prune, pull, remove, verify

COMMANDS = ("pull", "images", "rmi", "prune", "load", "build")


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("pull", help="pull an image from its registry into the store")
    p.add_argument("ref", metavar="REF", help="e.g. debian:bookworm, ghcr.io/org/app@sha256:...")
    p.add_argument("--platform", help="OS/ARCH[/VARIANT] (default: this host's)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the digest")
    p = sub.add_parser("images", help="list the images in the store")
    p.add_argument("--verify", action="store_true", help="check every blob and layer against its digest")
    p = sub.add_parser("rmi", help="remove images (and the layers nothing else uses)")
    p.add_argument("refs", nargs="+", metavar="REF")
    sub.add_parser("prune", help="remove every blob and layer no image or running sandbox uses")
    p = sub.add_parser("build", help="build a recipe of images/ (Debian packages) as an OCI image")
    p.add_argument("recipe", metavar="DIR", help="e.g. images/debian (its image.json names the tags)")
    p.add_argument("--rootfs", help="a tree the recipe already built: store it, do not rebuild")
    p = sub.add_parser("load", help="load images from an OCI layout directory or a docker save tarball")
    p.add_argument("path", metavar="PATH")
    p.add_argument("--name", help="the repository, when the layout names only tags (e.g. myapp)")
    p.add_argument("--platform", help="OS/ARCH[/VARIANT] for multi-platform images (default: this host's)")


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


class ProgressDisplay:
    """One status line on a terminal (rewritten in place), a line per layer
    otherwise; called from the pull's worker threads."""

    def __init__(self, ref: str, out: TextIO = sys.stderr) -> None:
        self.ref = ref
        self.out = out
        self.tty = out.isatty()
        self.lock = threading.Lock()
        self.done: dict[str, int] = {}
        self.total: dict[str, int] = {}
        self.finished: set[str] = set()
        self.last = 0.0

    def __call__(self, event: str, digest: str, done: int, total: int) -> None:
        if event == "unpacking":
            return  # counts uncompressed bytes: not comparable with the download's
        with self.lock:
            self.done[digest], self.total[digest] = done, total
            short = digest[7:19]
            if event in ("done", "exists"):
                self.finished.add(digest)
                if not self.tty:
                    word = "already in the store" if event == "exists" else f"pulled, {_mb(total)}"
                    print(f"{short}: {word}", file=self.out, flush=True)
            now = time.monotonic()
            if self.tty and (now - self.last > 0.1 or event != "download"):
                self.last = now
                line = (
                    f"{self.ref}: {len(self.finished)}/{len(self.total)} layers, "
                    f"{_mb(sum(self.done.values()))} of {_mb(sum(self.total.values()))}"
                )
                self.out.write("\r\x1b[K" + line)
                self.out.flush()

    def end(self) -> None:
        if self.tty:
            self.out.write("\r\x1b[K")
            self.out.flush()


def cmd_pull(a: argparse.Namespace) -> int:
    ref = parse(a.ref, "REF")
    show = None if a.quiet else ProgressDisplay(ref.familiar())
    t0 = time.monotonic()
    try:
        img = pull(a.ref, platform=a.platform, progress=show)
    finally:
        if show is not None:
            show.end()
    if a.quiet:
        print(img.digest)
    else:
        n = len(img.layers)
        print(
            f"{ref.familiar()}: {img.digest} ({n} layer{'s' * (n != 1)}, {_mb(img.size)}, "
            f"{img.config.platform}) in {time.monotonic() - t0:.2f} s"
        )
    return 0


def cmd_images(a: argparse.Namespace) -> int:
    st = Store()
    rows = [("IMAGE", "DIGEST", "PLATFORM", "LAYERS", "SIZE")]
    for rec in list(st):
        rows.append(
            (
                parse(rec["ref"]).familiar(),
                rec["digest"][7:19],
                rec.get("platform", "?"),
                str(len(rec["layers"])),
                _mb(rec.get("size", 0)),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    if not a.verify:
        return 0
    problems = verify(st)
    for p in problems:
        print(f"sandbox images --verify: {p}", file=sys.stderr)
    if problems:
        print(
            f"store {st.root}: {len(problems)} problem(s); `sandbox rmi` the images named, then pull again",
            file=sys.stderr,
        )
        return 1
    print(f"store {st.root}: intact (every blob matches its digest, every layer its unpacked summary)")
    return 0


def cmd_rmi(a: argparse.Namespace) -> int:
    for ref in a.refs:
        for line in remove(ref):
            print(f"removed {line}")
    return 0


def cmd_prune(a: argparse.Namespace) -> int:
    removed = prune()
    for line in removed:
        print(f"removed {line}")
    print(f"pruned {len(removed)} item(s)")
    return 0


def cmd_build(a: argparse.Namespace) -> int:
    t0 = time.monotonic()
    refs = build(a.recipe, rootfs=a.rootfs)
    names = ", ".join(r.familiar() for r in refs)
    print(f"built {names} in {time.monotonic() - t0:.1f} s")
    return 0


def cmd_load(a: argparse.Namespace) -> int:
    for ref in load(a.path, name=a.name, platform=a.platform, progress=ProgressDisplay(a.path)):
        print(f"loaded {ref.familiar()}")
    return 0


def ensure(ref: str) -> None:
    """Before `sandbox run IMAGE`: pull with the progress display when missing."""
    r = parse(ref, "--image")
    st = Store()
    rec = st.read_record(r)
    if rec is None or not st.complete(rec):
        cmd_pull(argparse.Namespace(ref=ref, platform=None, quiet=False))


def main(a: argparse.Namespace) -> int:
    cmd = {
        "pull": cmd_pull,
        "images": cmd_images,
        "rmi": cmd_rmi,
        "prune": cmd_prune,
        "load": cmd_load,
        "build": cmd_build,
    }[a.cmd]
    try:
        return cmd(a)
    except BrokenPipeError:
        # the reader went away (| head): stop quietly, as other tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
