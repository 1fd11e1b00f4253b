"""Manifests, indexes, configs and challenges from a registry: parsed with
bounds, platform chosen, errors that say what is on offer."""

from __future__ import annotations

import json

import pytest

from sandbox.errors import ConfigError
from sandbox.images import config as regconfig
from sandbox.images import manifest as mf
from sandbox.images.auth import parse_challenge
from sandbox.images.errors import ImageError, PlatformNotFound

D1, D2, D3 = ("sha256:" + c * 64 for c in "123")


def entry(digest: str, plat: dict[str, str] | None, mt: str = mf.OCI_MANIFEST) -> dict[str, object]:
    e: dict[str, object] = {"mediaType": mt, "digest": digest, "size": 100}
    if plat is not None:
        e["platform"] = plat
    return e


INDEX = {
    "manifests": [
        entry(D1, {"os": "unknown", "architecture": "unknown"}),
        entry(D2, {"os": "linux", "architecture": "arm64", "variant": "v8"}),
        entry(D3, {"os": "linux", "architecture": "amd64"}),
    ]
}


@pytest.mark.parametrize(
    ("want", "digest"),
    [("linux/amd64", D3), ("linux/arm64", D2), ("linux/arm64/v8", D2)],
)
def test_platform_selection(want: str, digest: str) -> None:
    assert mf.select(mf.index_entries(INDEX, "x"), want, "x").digest == digest


def test_platform_missing_lists_offers() -> None:
    with pytest.raises(PlatformNotFound) as e:
        mf.select(mf.index_entries(INDEX, "img"), "linux/s390x", "img")
    assert "no image for platform linux/s390x; the index offers: linux/amd64, linux/arm64/v8" in str(e.value)


def test_offered_platforms_are_quoted_when_odd() -> None:
    """Found by review: an index's platform strings were printed raw."""
    idx = {"manifests": [*INDEX["manifests"], entry(D1, {"os": "linux\x1b[2J", "architecture": "amd64"})]}
    with pytest.raises(PlatformNotFound) as e:
        mf.select(mf.index_entries(idx, "img"), "linux/s390x", "img")
    assert "\x1b" not in str(e.value)
    assert "the index offers: 'linux\\x1b[2J/amd64', linux/amd64, linux/arm64/v8" in str(e.value)


def test_config_platform_checked() -> None:
    """Found by review: the config's os/architecture went raw into the
    record, and from there to `sandbox images` and the pull's summary."""
    body = {"os": "linux", "architecture": "amd64\x1b]0;owned\x07", "rootfs": {"diff_ids": [D1]}}
    with pytest.raises(ImageError, match="is not a platform") as e:
        mf.parse_config(json.dumps(body).encode(), "x")
    assert "\x1b" not in str(e.value)
    body["architecture"] = "arm64"
    body["variant"] = "v8"
    assert mf.parse_config(json.dumps(body).encode(), "x").platform == "linux/arm64/v8"
    del body["os"], body["architecture"], body["variant"]
    assert mf.parse_config(json.dumps(body).encode(), "x").platform == ""  # none said: the pull's


def test_variant_must_match_when_asked() -> None:
    idx = {"manifests": [entry(D1, {"os": "linux", "architecture": "arm", "variant": "v6"})]}
    with pytest.raises(PlatformNotFound, match="linux/arm/v6"):
        mf.select(mf.index_entries(idx, "x"), "linux/arm/v7", "x")
    assert mf.select(mf.index_entries(idx, "x"), "linux/arm", "x").digest == D1


def test_bad_platform_option() -> None:
    with pytest.raises(ConfigError, match=r"^platform: 'amd64': write OS/ARCH"):
        mf.check_platform("amd64")


@pytest.mark.parametrize(
    ("desc", "says"),
    [
        ({"digest": "sha256:zz", "size": 1}, "without a sha256 digest"),
        ({"digest": D1, "size": -1}, "bad size"),
        ({"digest": D1, "size": True}, "bad size"),
        ("nope", "not an object"),
    ],
)
def test_bad_descriptors(desc: object, says: str) -> None:
    with pytest.raises(ImageError, match=says):
        mf.index_entries({"manifests": [desc]}, "x")


def test_manifest_layers_checked() -> None:
    m = {
        "config": {"digest": D1, "size": 5},
        "layers": [{"mediaType": "application/x-foreign", "digest": D2, "size": 1}],
    }
    with pytest.raises(ImageError, match="unsupported media type 'application/x-foreign'"):
        mf.manifest_parts(m, "x")
    with pytest.raises(ImageError, match="at most 500 layers"):
        mf.manifest_parts({"config": m["config"], "layers": [m["layers"][0]] * 501}, "x")  # type: ignore[index]


def test_media_type_without_field() -> None:
    assert mf.media_type({"layers": []}, None) == mf.OCI_MANIFEST  # umoci writes none
    assert mf.media_type({"manifests": []}, None) == mf.OCI_INDEX
    assert mf.media_type({}, mf.DOCKER_MANIFEST + "; charset=utf-8") == mf.DOCKER_MANIFEST


def test_config() -> None:
    body = json.dumps(
        {
            "os": "linux",
            "architecture": "amd64",
            "rootfs": {"type": "layers", "diff_ids": [D1]},
            "config": {
                "Env": ["PATH=/bin", "A=b=c", "junk"],
                "Entrypoint": ["/e"],
                "Cmd": ["x"],
                "WorkingDir": "/w",
                "User": "1000:1000",
            },
        }
    ).encode()
    c = mf.parse_config(body, "x")
    assert c.env == (("PATH", "/bin"), ("A", "b=c"))
    assert (c.entrypoint, c.cmd, c.workdir, c.user, c.platform) == (
        ("/e",),
        ("x",),
        "/w",
        "1000:1000",
        "linux/amd64",
    )


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b"{",
        b'{"rootfs": {"diff_ids": ["md5:x"]}}',
        b'{"rootfs": {"diff_ids": []}, "config": {"Cmd": "sh"}}',
    ],
)
def test_bad_configs(body: bytes) -> None:
    with pytest.raises(ImageError):
        mf.parse_config(body, "x")


def test_challenge() -> None:
    scheme, p = parse_challenge(
        'Bearer realm="http://127.0.0.1:5003/token",service="reg",scope="repository:library/busybox:pull"'
    )
    assert scheme == "bearer"
    assert p == {
        "realm": "http://127.0.0.1:5003/token",
        "service": "reg",
        "scope": "repository:library/busybox:pull",
    }
    assert parse_challenge('Basic realm="x"') == ("basic", {"realm": "x"})


def test_mirrors_and_insecure(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.delenv("SANDBOX_REGISTRY_MIRRORS_ONLY", raising=False)  # set by tests/conftest.py
    monkeypatch.setenv("SANDBOX_REGISTRY_CONFIG", "/nonexistent/registries.json")
    monkeypatch.setenv("SANDBOX_REGISTRY_MIRRORS", "http://127.0.0.1:5180/, https://m.example")
    monkeypatch.setenv("SANDBOX_INSECURE_REGISTRIES", "127.0.0.1:5181")
    c = regconfig.load()
    assert c.endpoints("docker.io") == ["http://127.0.0.1:5180", "https://m.example", regconfig.HUB_ENDPOINT]
    assert c.endpoints("127.0.0.1:5181") == ["http://127.0.0.1:5181"]
    assert c.endpoints("ghcr.io") == ["https://ghcr.io"]
    monkeypatch.setenv("SANDBOX_REGISTRY_MIRRORS_ONLY", "1")
    assert regconfig.load().endpoints("docker.io") == ["http://127.0.0.1:5180", "https://m.example"]
    monkeypatch.setenv("SANDBOX_REGISTRY_MIRRORS", "m.example")
    with pytest.raises(ConfigError, match=r"^SANDBOX_REGISTRY_MIRRORS: mirror 'm.example': give a URL"):
        regconfig.load()


def test_docker_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    import base64
    from pathlib import Path

    d = Path(str(tmp_path))
    (d / "config.json").write_text(
        json.dumps(
            {
                "auths": {
                    "127.0.0.1:5181": {"auth": base64.b64encode(b"u:p:w").decode()},
                    "https://index.docker.io/v1/": {"username": "hub", "password": "pw"},
                }
            }
        )
    )
    monkeypatch.setenv("DOCKER_CONFIG", str(d))
    c = regconfig.load()
    assert c.credentials("127.0.0.1:5181") == ("u", "p:w")
    assert c.credentials("registry-1.docker.io") == ("hub", "pw")
    assert c.credentials("other") is None
    assert "p:w" not in repr(c)


def test_registries_file(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    from pathlib import Path

    monkeypatch.delenv("SANDBOX_REGISTRY_MIRRORS_ONLY", raising=False)  # set by tests/conftest.py

    d = Path(str(tmp_path))
    ca = d / "ca.pem"
    ca.write_text("not checked here")
    f = d / "registries.json"
    f.write_text(
        json.dumps({"mirrors": ["https://m.example/"], "insecure": ["10.0.0.1:5000"], "ca_file": str(ca)})
    )
    for var in ("SANDBOX_REGISTRY_MIRRORS", "SANDBOX_INSECURE_REGISTRIES", "SANDBOX_REGISTRY_CA"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SANDBOX_REGISTRY_CONFIG", str(f))
    c = regconfig.load()
    assert c.endpoints("docker.io") == ["https://m.example", regconfig.HUB_ENDPOINT]
    assert c.endpoints("10.0.0.1:5000") == ["http://10.0.0.1:5000"]
    assert c.ca_file == str(ca)
    f.write_text("{not json")
    with pytest.raises(ConfigError, match=r"^SANDBOX_REGISTRY_CONFIG: cannot read"):
        regconfig.load()
    f.write_text(json.dumps({"ca_file": str(d / "missing.pem")}))
    with pytest.raises(ConfigError, match=r"is not a readable PEM file"):
        regconfig.load()


def test_json_nested_too_deeply_is_an_image_error() -> None:
    """Untrusted JSON deeper than the parser's stack raised RecursionError."""
    with pytest.raises(ImageError, match="nested too deeply"):
        mf.loads(b"[" * 400_000, "manifest")
