"""The adapter registry on real folders under tmp_path."""

from __future__ import annotations

import json
import os

import pytest

from tests.registry_contract import RegistryContract
from training.registry import (
    VERSION_PATTERN,
    InvalidVersion,
    LocalRegistry,
    RegistryError,
)


@pytest.fixture
def registry(tmp_path):
    return LocalRegistry(tmp_path / "adapters", keep=3)


class TestLocalRegistry(RegistryContract):
    """The adapter-store contract on a local folder."""

    @pytest.fixture
    def registry(self, tmp_path):
        return LocalRegistry(tmp_path / "adapters", keep=3)

    @pytest.fixture
    def reopen(self, tmp_path):
        return lambda: LocalRegistry(tmp_path / "adapters", keep=3)

    def leave_half_version(self, registry, version):
        (registry.root / version).mkdir()
        (registry.root / version / "adapter_model.safetensors").write_bytes(b"half")


def publish(registry: LocalRegistry, **manifest) -> str:
    """Publish a version holding a fake weights file; returns its name."""
    version = registry.new_version_name()
    with registry.staging() as folder:
        (folder / "adapter_model.safetensors").write_bytes(b"weights")
        (folder / "adapter_config.json").write_text("{}")
        registry.publish(folder, version, manifest)
    return version


def test_round_trip_publish_activate_get(registry):
    version = publish(registry, base_model="tiny-bert", metrics={"accuracy": 0.9})
    assert registry.current() is None  # publishing does not activate

    registry.activate(version)

    assert registry.current() == version
    assert (registry.root / "CURRENT").read_text() == version + "\n"
    adapter = registry.get(version)
    folder = registry.materialize(version)
    assert folder == registry.root / version
    assert (folder / "adapter_model.safetensors").read_bytes() == b"weights"
    expected = {"base_model": "tiny-bert", "metrics": {"accuracy": 0.9}, "version": version}
    assert adapter.manifest == expected
    assert json.loads((folder / "manifest.json").read_text()) == expected
    assert [v.version for v in registry.versions()] == [version]


def test_new_version_names_increase_and_stay_unique_within_a_second(registry):
    names = [registry.new_version_name() for _ in range(5)]
    numbers = [int(name[1:].split("-")[0]) for name in names]
    assert numbers == [1, 2, 3, 4, 5]
    assert all(VERSION_PATTERN.match(name) for name in names)


def test_new_version_name_follows_published_versions(registry, tmp_path):
    publish(registry)
    publish(registry)
    fresh = LocalRegistry(tmp_path / "adapters")  # another process, no memory of names
    assert fresh.new_version_name().startswith("v0003-")


def test_publish_refuses_an_existing_version(registry):
    version = publish(registry)
    with registry.staging() as folder, pytest.raises(RegistryError, match="exists"):
        registry.publish(folder, version, {})


def test_publish_refuses_a_folder_that_is_not_ours(registry, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    with pytest.raises(RegistryError, match="not a staging folder"):
        registry.publish(outside, registry.new_version_name(), {})


def test_publish_refuses_a_pickle_in_staging(registry):
    version = registry.new_version_name()
    with registry.staging() as folder:
        (folder / "adapter_model.bin").write_bytes(b"pickle")
        with pytest.raises(RegistryError, match="adapter_model.bin"):
            registry.publish(folder, version, {})
    assert registry.versions() == []


def test_staging_is_removed_when_the_body_raises(registry):
    with pytest.raises(RuntimeError), registry.staging() as folder:
        (folder / "adapter_model.safetensors").write_bytes(b"half")
        raise RuntimeError("training crashed")
    assert not folder.exists()


def test_clean_staging_removes_debris_that_versions_ignore(registry):
    version = publish(registry)
    for _ in range(2):
        with registry.staging() as folder:
            (folder / "adapter_model.safetensors").write_bytes(b"half")  # crash: never published
    (registry.root / ".staging-abc-CURRENT").write_text(version)  # crash before os.replace

    assert [v.version for v in registry.versions()] == [version]
    assert registry.clean_staging() == 3
    assert os.listdir(registry.root) == [version]


@pytest.mark.parametrize(
    "name",
    [
        "../etc",
        "..",
        ".",
        "/abs",
        "/etc/passwd",
        "v0001-20260101T000000/../x",
        "v0001-20260101T000000/x",
        "",
        "v1",
        "a\x00b",
        "v0001-20260101T000000\x00",
        "v0001-20260101T000000\n",
        "v0001-20260101T000000\\x",
        "v\u0661\u0662\u0663\u0664-20260101T000000",  # Arabic-Indic digits
        "CURRENT",
        ".staging-abc",
    ],
)
def test_malformed_names_are_refused(registry, name):
    with pytest.raises(InvalidVersion, match="invalid adapter version"):
        registry.get(name)
    with pytest.raises(InvalidVersion):
        registry.activate(name)
    with registry.staging() as folder, pytest.raises(InvalidVersion):
        registry.publish(folder, name, {})
    assert not (registry.root / "CURRENT").exists()


def test_symlinked_version_folder_outside_root_is_refused(registry, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "manifest.json").write_text("{}")
    (outside / "adapter_model.safetensors").write_bytes(b"weights")
    name = "v0001-20260101T000000"
    (registry.root / name).symlink_to(outside, target_is_directory=True)

    with pytest.raises(RegistryError, match="symlink") as refused:
        registry.get(name)
    assert not isinstance(refused.value, InvalidVersion)  # unsafe, not malformed: 409
    assert registry.versions() == []


def test_symlink_inside_a_version_folder_is_refused(registry, tmp_path):
    version = publish(registry)
    secret = tmp_path / "secret.safetensors"
    secret.write_bytes(b"not yours")
    (registry.root / version / "head.safetensors").symlink_to(secret)

    with pytest.raises(RegistryError, match="head.safetensors is a symlink"):
        registry.get(version)
    assert registry.versions() == []


@pytest.mark.parametrize(
    "planted", ["evil.pkl", "adapter_model.bin", "x.pt", "x.pickle", "noext", "w.SAFETENSORS"]
)
def test_planted_unsafe_file_blocks_get_and_activate(registry, planted):
    good = publish(registry)
    bad = publish(registry)
    registry.activate(good)
    (registry.root / bad / planted).write_bytes(b"\x80\x04pickle")

    with pytest.raises(RegistryError, match=f"remove .*{planted}"):
        registry.get(bad)
    with pytest.raises(RegistryError, match=planted):
        registry.activate(bad)
    assert registry.current() == good
    assert [v.version for v in registry.versions()] == [good]


def test_subfolder_in_a_version_is_refused(registry):
    version = publish(registry)
    (registry.root / version / "nested").mkdir()
    with pytest.raises(RegistryError, match="nested is not a regular file"):
        registry.get(version)


def test_activate_unknown_version_leaves_current_unchanged(registry):
    active = publish(registry)
    registry.activate(active)

    with pytest.raises(InvalidVersion, match=f"unknown adapter version.*known versions: {active}"):
        registry.activate("v0009-20260101T000000")
    assert registry.current() == active


def test_deactivate_serves_the_base_model(registry):
    registry.activate(publish(registry))
    registry.deactivate()
    assert registry.current() is None
    assert not (registry.root / "CURRENT").exists()
    registry.deactivate()  # idempotent
    assert registry.current() is None


@pytest.mark.parametrize("content", ["", "\n", "../etc\n", "v0001-20260101T000000\n"])
def test_current_naming_nothing_usable_means_base_model(registry, content):
    (registry.root / "CURRENT").write_text(content)
    assert registry.current() is None


def test_current_naming_a_deleted_folder_means_base_model(registry, caplog):
    version = publish(registry)
    registry.activate(version)
    for file in (registry.root / version).iterdir():
        file.unlink()
    (registry.root / version).rmdir()
    assert registry.current() is None
    assert f"unknown adapter version '{version}'" in caplog.text


def test_manifest_that_is_not_plain_json_is_refused(registry):
    version = registry.new_version_name()
    with registry.staging() as folder, pytest.raises(RegistryError, match="not plain JSON"):
        registry.publish(folder, version, {"when": object()})
    assert registry.versions() == []


def test_folder_without_manifest_is_not_a_version(registry):
    name = "v0001-20260101T000000"
    (registry.root / name).mkdir()
    (registry.root / name / "adapter_model.safetensors").write_bytes(b"weights")

    with pytest.raises(RegistryError, match="no manifest.json"):
        registry.get(name)
    with pytest.raises(RegistryError):
        registry.activate(name)
    assert registry.versions() == []
    assert registry.current() is None


def test_prune_keeps_the_newest_and_never_the_current(registry):
    versions = [publish(registry) for _ in range(6)]
    registry.activate(versions[0])

    removed = registry.prune()

    assert removed == versions[1:3]
    assert [v.version for v in registry.versions()] == [versions[0], *versions[3:]]
    assert registry.current() == versions[0]
    assert not any(name.startswith(".staging-") for name in os.listdir(registry.root))


@pytest.mark.parametrize("count, removed", [(0, 0), (3, 0), (4, 1), (7, 4)])
def test_prune_removes_only_beyond_keep(registry, count, removed):
    versions = [publish(registry) for _ in range(count)]
    assert registry.prune() == versions[:removed]
    assert [v.version for v in registry.versions()] == versions[removed:]
