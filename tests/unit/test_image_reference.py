"""Image references, normalised as Docker does; bad ones name the fix."""

from __future__ import annotations

import pytest

from sandbox.errors import ConfigError
from sandbox.images.reference import parse

D = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("ref", "want", "familiar"),
    [
        ("debian", "docker.io/library/debian:latest", "debian:latest"),
        ("debian:bookworm", "docker.io/library/debian:bookworm", "debian:bookworm"),
        ("user/app", "docker.io/user/app:latest", "user/app:latest"),
        ("docker.io/debian", "docker.io/library/debian:latest", "debian:latest"),
        ("index.docker.io/library/debian:12", "docker.io/library/debian:12", "debian:12"),
        (f"ghcr.io/x/y@{D}", f"ghcr.io/x/y@{D}", f"ghcr.io/x/y@{D}"),
        (f"ghcr.io/x/y:v1@{D}", f"ghcr.io/x/y:v1@{D}", f"ghcr.io/x/y:v1@{D}"),
        ("127.0.0.1:5000/img:1", "127.0.0.1:5000/img:1", "127.0.0.1:5000/img:1"),
        ("localhost/x", "localhost/x:latest", "localhost/x:latest"),
        ("localhost:5000/a/b/c", "localhost:5000/a/b/c:latest", "localhost:5000/a/b/c:latest"),
        ("my.registry/a.b/c_d-e__f", "my.registry/a.b/c_d-e__f:latest", "my.registry/a.b/c_d-e__f:latest"),
    ],
)
def test_normalised(ref: str, want: str, familiar: str) -> None:
    r = parse(ref)
    assert str(r) == want
    assert r.familiar() == familiar


def test_parts() -> None:
    r = parse(f"127.0.0.1:5000/library/busybox:zstd@{D}")
    assert (r.registry, r.repository, r.tag, r.digest) == ("127.0.0.1:5000", "library/busybox", "zstd", D)
    assert r.lookup == D  # pinned: the digest wins over the tag
    assert parse("debian").lookup == "latest"


@pytest.mark.parametrize(
    ("ref", "says"),
    [
        ("Debian", "names are lowercase"),
        ("a//b", "bad name component ''"),
        ("debian:", "bad tag ''"),
        ("/debian", "bad name component"),
        ("debian@sha256:abc", "64 lowercase hex digits"),
        ("debian@md5:" + "a" * 32, "must be sha256"),
        ("a b", "is not an image reference"),
        ("", "is not an image reference"),
        ("x" * 500, "is not an image reference"),
        ("debian:" + "t" * 129, "bad tag"),
        ("bad_host.:5000/x", "is not a registry host"),
    ],
)
def test_invalid(ref: str, says: str) -> None:
    with pytest.raises(ConfigError, match=r"^image: ") as e:
        parse(ref)
    assert says in str(e.value)


def test_not_a_string() -> None:
    with pytest.raises(ConfigError, match="expected an image reference"):
        parse(42)
