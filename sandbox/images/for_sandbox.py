"""What `Sandbox(image=...)` takes from an image: its unpacked layers
(lowest first, for the core's `layers=` path), its Env under the caller's
env, its WorkingDir and User unless the caller gave them, and a Hold on the
layers for the sandbox's lifetime."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ..spec import check_abs_path
from . import Image, _image, local_or_pull
from .errors import ImageError
from .reference import parse
from .store import Hold, Store


@dataclass
class Resolved:
    image: Image
    layers: list[str]
    env: dict[str, str]
    workdir: str | None
    user: str | int | None
    store: Store
    record: dict[str, Any]

    def hold(self) -> Hold:
        """Hold the layers (a shared flock) until the sandbox closes."""
        with self.store.lock():
            if not self.store.complete(self.record):
                raise ImageError(
                    f"{self.image.ref}: removed from the store meanwhile; make the sandbox again"
                )
            return self.store.hold(self.record)


def resolve(
    image: object,
    *,
    rootfs: object,
    layers: object,
    env: object,
    workdir: str | None,
    user: str | int | None,
) -> Resolved:
    if rootfs is not None or layers is not None:
        raise ConfigError("image", "give one of image=, rootfs= or layers=, not several")
    if not isinstance(image, str):
        raise ConfigError("image", f"expected a reference such as 'debian:bookworm', got {image!r}")
    if env is not None and not isinstance(env, Mapping):
        raise ConfigError("env", f"expected a mapping of names to strings, got {type(env).__name__}")
    r = parse(image)
    st = Store()
    with st.lock():
        rec = local_or_pull(st, r)
    img = _image(st, r, rec)
    merged = dict(img.config.env)
    merged.update(env or {})
    if workdir is None and img.config.workdir is not None:
        try:
            workdir = check_abs_path("workdir", img.config.workdir)
        except ConfigError:  # the image's fault, not the caller's option
            raise ImageError(
                f"{img.ref}: the image's WorkingDir {img.config.workdir!r} is not an absolute path "
                "without '..'; pass workdir= to choose the working directory"
            ) from None
    return Resolved(
        image=img,
        layers=list(img.layers),
        env=merged,
        workdir=workdir,
        user=user if user is not None else img.config.user,
        store=st,
        record=rec,
    )
