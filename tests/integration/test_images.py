"""Sandboxes from OCI images pulled from the real registry
(tests/registry): Docker Hub names through a mirror, no request for an image
already in the store, whiteouts seen from inside, many layers, the image's
defaults, and layers held while a sandbox runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox import Sandbox, images
from sandbox.images.store import Store
from tests.conftest import require_sandbox_host, sh_ok
from tests.registry.fixture import Proxy, Registry

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _host() -> None:
    require_sandbox_host()


def test_debian_through_the_mirror_then_no_request(
    store: Path, registry: Registry, proxy: Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SANDBOX_REGISTRY_MIRRORS", f"http://{proxy.addr}")
    with Sandbox(image="debian") as sb:
        out = sh_ok(sb, "cat /etc/os-release")
        assert sb.image is not None and sb.image.digest == registry.image("debian:latest")["digest"]
    assert "VERSION_CODENAME=bookworm" in out
    blob = registry.image("debian:latest")["layers"][0]["digest"]
    assert f"GET /v2/library/debian/blobs/{blob} HTTP/1.1" in proxy.requests
    assert images.verify() == []
    before = len(proxy.requests)
    with Sandbox(image="debian") as sb:
        assert "bookworm" in sh_ok(sb, "cat /etc/os-release")
    assert proxy.requests[before:] == [], "a second sandbox asked the registry again"


def test_whiteouts_and_opaque_dirs_from_inside(store: Path, registry: Registry) -> None:
    with Sandbox(image=registry.ref("whiteout:latest")) as sb:
        assert sh_ok(sb, "ls -A /data").split() == [
            "added.txt",
            "changed.txt",
            "hardlink-to-keep",
            "keep.txt",
        ]
        assert sh_ok(sb, "cat /data/changed.txt") == "changed v2\n"
        assert sh_ok(sb, "ls -A /opaque") == "new.txt\n"  # old-a.txt and sub/ hidden by the opaque dir
        assert sh_ok(sb, "test -e /gone-dir || echo gone") == "gone\n"
        # the inode is shared by the hardlink inside the layer
        assert sh_ok(sb, "stat -c %i /data/keep.txt /data/hardlink-to-keep | uniq | wc -l").strip() == "1"
        # deleting and recreating over a whiteout works in the writable layer
        assert sh_ok(
            sb, "echo back > /data/remove-me.txt; rm -r /opaque; ls /; cat /data/remove-me.txt"
        ).endswith("back\n")


def test_image_defaults_env_workdir_entrypoint(store: Path, registry: Registry) -> None:
    with Sandbox(image=registry.ref("whiteout:latest"), env={"MINE": "1"}) as sb:
        assert sh_ok(sb, 'echo "$PWD $GREETING $MINE"') == "/data from-image 1\n"
        assert sb.image is not None
        r = sb.exec(sb.image.argv())
        assert r.stdout == b"entry in /data: from-image\n"
        assert sb.image.argv(["echo hi"]) == ["/bin/sh", "-c", "echo hi"]
    with Sandbox(image=registry.ref("whiteout:latest"), workdir="/", env={"GREETING": "mine"}) as sb:
        assert sh_ok(sb, 'echo "$PWD $GREETING"') == "/ mine\n"


def test_sixty_four_layers(store: Path, registry: Registry) -> None:
    with Sandbox(image=registry.ref("many:latest")) as sb:
        assert len(sb.image.layers) == 64  # type: ignore[union-attr]
        assert sh_ok(sb, "ls /layers | wc -l; cat /layers/063").split() == ["63", "63"]


@pytest.mark.parametrize("tag", ["busybox:zstd", "busybox:uncompressed", "busybox:v2s2", "multiarch:v2s2"])
def test_formats_run(store: Path, registry: Registry, tag: str) -> None:
    with Sandbox(image=registry.ref(tag)) as sb:
        assert sh_ok(sb, "echo ok") == "ok\n"
        assert sb.image is not None and sb.image.digest == (
            registry.image(tag).get("platforms", {}).get("linux/amd64") or registry.image(tag)["digest"]
        )


def test_running_sandbox_holds_its_layers(store: Path, registry: Registry) -> None:
    ref = registry.ref("busybox:latest")
    with Sandbox(image=ref) as sb:
        layer = Path(sb.image.layers[0])  # type: ignore[union-attr]
        images.remove(ref)
        assert images.prune() == []
        assert layer.is_dir(), "rmi/prune took the layers of a running sandbox"
        assert sh_ok(sb, "ls /bin/busybox") == "/bin/busybox\n"
    removed = images.prune()
    assert not layer.exists() and any(r.startswith("layer ") for r in removed)


def test_bad_options_hold_nothing(store: Path, registry: Registry) -> None:
    from sandbox.errors import ConfigError

    ref = registry.ref("busybox:latest")
    with pytest.raises(ConfigError, match=r"^hostname: "):
        Sandbox(image=ref, hostname="bad host")
    images.remove(ref)
    assert not any((Store().root / "layers").iterdir()), "a failed Sandbox() still held the layers"
    with pytest.raises(ConfigError, match=r"^image: give one of image=, rootfs= or layers="):
        Sandbox(image=ref, rootfs="/")


def test_async_sandbox_from_image(store: Path, registry: Registry) -> None:
    import anyio

    from sandbox import AsyncSandbox

    ref = registry.ref("whiteout:latest")

    async def main() -> bytes:
        await anyio.to_thread.run_sync(images.pull, ref)  # the pull off the event loop
        async with AsyncSandbox(image=ref) as sb:
            r = await sb.exec(["sh", "-c", 'echo "$PWD $GREETING"'])
        return r.stdout

    assert anyio.run(main) == b"/data from-image\n"
