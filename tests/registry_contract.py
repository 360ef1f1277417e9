"""What every adapter store must do, whatever holds the versions (a folder, a bucket).

A backend's test module subclasses `RegistryContract` as `Test<Backend>Registry` and
provides `registry` (keep=3, empty), `reopen` (a callable opening another instance on the
same store, as another process or host would) and `leave_half_version` (files of a version
without its manifest, as a crash mid-publish leaves them). Named without the `test_`
prefix so pytest collects it only through those subclasses.
"""

from __future__ import annotations

import pytest

from training.registry import VERSION_PATTERN, InvalidVersion, RegistryError, UnknownVersion
from training.registry.base import sequence_number

WEIGHTS = b"weights"


def publish(registry, weights: bytes = WEIGHTS, **manifest) -> str:
    """Publish a version holding a fake weights file and config; returns its name."""
    version = registry.new_version_name()
    with registry.staging() as folder:
        (folder / "adapter_model.safetensors").write_bytes(weights)
        (folder / "adapter_config.json").write_text("{}")
        registry.publish(folder, version, manifest)
    return version


def names(registry) -> list[str]:
    return [adapter.version for adapter in registry.versions()]


class RegistryContract:
    @pytest.fixture
    def registry(self):
        raise NotImplementedError("a backend's test class provides registry")

    @pytest.fixture
    def reopen(self):
        raise NotImplementedError("a backend's test class provides reopen")

    def leave_half_version(self, registry, version: str) -> None:
        raise NotImplementedError("a backend's test class leaves files without a manifest")

    def test_publish_get_materialize_round_trip(self, registry, reopen):
        version = publish(registry, base_model="tiny-bert", metrics={"accuracy": 0.9})

        expected = {"base_model": "tiny-bert", "metrics": {"accuracy": 0.9}, "version": version}
        for reader in (registry, reopen()):
            adapter = reader.get(version)
            assert adapter.manifest.items() >= expected.items()
            folder = reader.materialize(version)
            assert (folder / "adapter_model.safetensors").read_bytes() == WEIGHTS
            assert (folder / "adapter_config.json").read_text() == "{}"
            assert (folder / "manifest.json").exists()
            assert names(reader) == [version]

    def test_materialize_twice_gives_the_same_checked_folder(self, registry):
        version = publish(registry)
        first = registry.materialize(version)
        assert registry.materialize(version) == first
        assert (first / "adapter_model.safetensors").read_bytes() == WEIGHTS

    def test_current_changes_only_on_activate_and_every_reader_follows(self, registry, reopen):
        worker = reopen()
        version = publish(registry)
        assert registry.current() is None and worker.current() is None  # publish != activate

        assert registry.activate(version).version == version
        assert registry.current() == version and worker.current() == version

        registry.deactivate()
        assert registry.current() is None and worker.current() is None
        registry.deactivate()  # idempotent
        assert worker.current() is None

    def test_unknown_and_invalid_versions_differ(self, registry):
        active = publish(registry)
        registry.activate(active)

        missing = "v0009-20260101T000000"
        with pytest.raises(UnknownVersion, match=f"known versions: {active}"):
            registry.get(missing)
        with pytest.raises(UnknownVersion):
            registry.activate(missing)
        with pytest.raises(UnknownVersion):
            registry.materialize(missing)
        for bad in ("../etc", "CURRENT", "v0001-20260101T000000/x", ""):
            with pytest.raises(InvalidVersion) as refused:
                registry.get(bad)
            assert not isinstance(refused.value, UnknownVersion)
            with pytest.raises(InvalidVersion):
                registry.activate(bad)
        assert registry.current() == active

    @pytest.mark.parametrize("count, removed", [(0, 0), (3, 0), (5, 2)])
    def test_prune_keeps_the_newest(self, registry, count, removed):
        versions = [publish(registry) for _ in range(count)]
        assert registry.prune() == versions[:removed]
        assert names(registry) == versions[removed:]

    def test_prune_spares_current_and_versions_in_use(self, registry):
        versions = [publish(registry) for _ in range(6)]
        registry.activate(versions[0])

        removed = registry.prune(spare=[versions[2]])

        assert removed == [versions[1]]
        assert names(registry) == [versions[0], versions[2], *versions[3:]]
        assert registry.current() == versions[0]
        with pytest.raises(UnknownVersion):
            registry.materialize(versions[1])
        assert registry.materialize(versions[2]).is_dir()

    def test_history_is_newest_first_and_marks_the_active_one(self, registry):
        versions = [publish(registry) for _ in range(3)]
        registry.activate(versions[1])
        history = [(adapter.version, active) for adapter, active in registry.history()]
        assert history == [(versions[2], False), (versions[1], True), (versions[0], False)]

    def test_half_written_version_is_never_listed_nor_current(self, registry, reopen):
        good = publish(registry)
        registry.activate(good)
        half = f"v{sequence_number(good) + 1:04d}-20260101T000000"
        self.leave_half_version(registry, half)

        for reader in (registry, reopen()):
            assert names(reader) == [good]
            with pytest.raises(RegistryError):
                reader.get(half)
            with pytest.raises(RegistryError):
                reader.activate(half)
            assert reader.current() == good
        assert sequence_number(registry.new_version_name()) > sequence_number(half)

    def test_new_names_increase_here_and_after_published_ones(self, registry, reopen):
        names_here = [registry.new_version_name() for _ in range(5)]
        assert [sequence_number(name) for name in names_here] == [1, 2, 3, 4, 5]
        assert all(VERSION_PATTERN.match(name) for name in names_here)

        fresh = reopen()
        publish(fresh)
        publish(fresh)
        assert reopen().new_version_name().startswith("v0003-")

    def test_publish_refuses_an_existing_version(self, registry):
        version = publish(registry)
        with registry.staging() as folder, pytest.raises(RegistryError, match="exists"):
            (folder / "adapter_model.safetensors").write_bytes(b"other")
            registry.publish(folder, version, {})
        folder = registry.materialize(version)
        assert (folder / "adapter_model.safetensors").read_bytes() == WEIGHTS

    def test_publish_refuses_unsafe_files_and_unplain_manifests(self, registry):
        with registry.staging() as folder:
            (folder / "adapter_model.bin").write_bytes(b"pickle")
            with pytest.raises(RegistryError, match="adapter_model.bin"):
                registry.publish(folder, registry.new_version_name(), {})
        with registry.staging() as folder, pytest.raises(RegistryError, match="not plain JSON"):
            registry.publish(folder, registry.new_version_name(), {"when": object()})
        assert registry.versions() == []

    def test_staging_is_removed_when_the_body_raises(self, registry):
        with pytest.raises(RuntimeError), registry.staging() as folder:
            (folder / "adapter_model.safetensors").write_bytes(b"half")
            raise RuntimeError("training crashed")
        assert not folder.exists()
        assert registry.versions() == []
