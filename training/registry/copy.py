"""Copy every published version and CURRENT from one adapter store to another: how a
single machine's adapters move to an object store (`python -m training migrate-adapters`)."""

from __future__ import annotations

import shutil

from training.registry.base import AdapterStore, RegistryError

# Keys each store writes into a manifest itself when publishing; copied, they would lie.
OWN_KEYS = ("version", "files")


def copy_registry(source: AdapterStore, target: AdapterStore) -> list[str]:
    """Publish `source`'s versions into an empty `target` under the same names, then point
    its CURRENT where the source's points; returns the versions copied, oldest first."""
    if target.versions():
        raise RegistryError("the target adapter store is not empty; copy into a new one")
    copied = []
    for adapter in source.versions():
        folder = source.materialize(adapter.version)
        manifest = {k: v for k, v in adapter.manifest.items() if k not in OWN_KEYS}
        with target.staging() as staging:
            for path in folder.iterdir():
                if path.name != "manifest.json":
                    shutil.copyfile(path, staging / path.name)
            target.publish(staging, adapter.version, manifest)
        copied.append(adapter.version)
    current = source.current()
    if current is not None:
        target.activate(current)
    return copied
