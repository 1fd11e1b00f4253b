"""Cold pull and unpack of the Debian image from the local registry
(tests/registry): ours beside `skopeo copy` + `umoci unpack` of the same
image, in the same run.  Every round starts from an empty store (removing
it is the untimed setup); the registry's files are in the page cache for
both.  The conftest's summary checks ours' median against theirs."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from sandbox import images
from sandbox.images.store import Store
from tests.registry.fixture import Registry, start

GROUP = "cold pull + unpack (debian:bookworm)"
ROUNDS = 5


@pytest.fixture(scope="session")
def registry() -> Registry:
    return start()


@pytest.fixture
def work() -> Iterator[str]:
    d = tempfile.mkdtemp(prefix="bench-pull-", dir="/var/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _fresh(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


def test_pull_ours(
    benchmark: BenchmarkFixture, registry: Registry, work: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SANDBOX_INSECURE_REGISTRIES", registry.plain)
    monkeypatch.setenv("SANDBOX_REGISTRY_CONFIG", os.path.join(work, "none.json"))
    ref = registry.ref("debian:bookworm")
    root = os.path.join(work, "store")

    def pull() -> None:
        img = images.pull(ref, store=Store(root))
        assert os.path.isfile(os.path.join(img.layers[0], "etc/os-release"))

    benchmark.group = GROUP
    benchmark.extra_info.update(runner="sandbox")
    benchmark.pedantic(pull, setup=lambda: _fresh(root), rounds=ROUNDS, warmup_rounds=1, iterations=1)


def test_pull_skopeo_umoci(benchmark: BenchmarkFixture, registry: Registry, work: str) -> None:
    for tool in ("skopeo", "umoci"):
        if not shutil.which(tool):
            pytest.skip(f"no {tool} (apt-get install skopeo umoci)")
    src = f"docker://{registry.ref('debian:bookworm')}"
    layout, bundle = os.path.join(work, "oci"), os.path.join(work, "bundle")

    def setup() -> None:
        _fresh(layout)
        _fresh(bundle)

    def pull() -> None:
        subprocess.run(
            ["skopeo", "copy", "-q", "--src-tls-verify=false", src, f"oci:{layout}:bookworm"], check=True
        )
        subprocess.run(
            ["umoci", "unpack", "--image", f"{layout}:bookworm", bundle],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        assert os.path.isfile(os.path.join(bundle, "rootfs/etc/os-release"))

    benchmark.group = GROUP
    benchmark.extra_info.update(runner="skopeo+umoci")
    benchmark.pedantic(pull, setup=setup, rounds=ROUNDS, warmup_rounds=1, iterations=1)
