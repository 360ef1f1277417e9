"""What may be in an adapter folder, and writing it durably: shared by every adapter store.

A store that downloads versions (an object store) runs the same checks on its local
copy before any loader opens it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from training.registry.base import RegistryError

# Pickle-based formats (.bin .pt .pkl) can run code when loaded, so they are refused.
# peft writes a README.md next to its weights; text files are never executed.
ALLOWED_SUFFIXES = (".safetensors", ".json", ".txt", ".md")
MANIFEST = "manifest.json"


def fsync_path(path: Path) -> None:
    """Flush a file's or a folder's entry list to disk (a folder must be opened read-only)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_entries(folder: Path) -> None:
    """Refuse anything in a version folder the loader must not touch."""
    for entry in os.scandir(folder):
        where = f"{folder.name}/{entry.name}"
        if entry.is_symlink():
            problem = "is a symlink, which could point outside the registry"
        elif not entry.is_file(follow_symlinks=False):
            problem = "is not a regular file; version folders are flat"
        elif not entry.name.endswith(ALLOWED_SUFFIXES):
            problem = (
                "is refused: only safetensors, json, txt and md files are kept (pickle runs code)"
            )
        else:
            continue
        raise RegistryError(f"{where} {problem}; remove {entry.path}")


def write_manifest(path: Path, manifest: dict) -> None:
    """Write and fsync manifest.json, refusing anything JSON cannot hold."""
    try:
        text = json.dumps(manifest, indent=2, sort_keys=True)
    except (TypeError, ValueError) as err:
        raise RegistryError(f"manifest is not plain JSON: {err}; use str/num/list/dict") from err
    with open(path, "w", encoding="utf-8") as f:
        f.write(text + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_manifest(folder: Path) -> dict:
    """The parsed manifest.json of a version folder, or RegistryError saying how to fix it."""
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RegistryError(f"{folder} has no {MANIFEST}: never published; delete it") from None
    except (UnicodeDecodeError, ValueError) as err:
        raise RegistryError(f"{path} is not valid JSON ({err}); delete it") from err
    if not isinstance(manifest, dict):
        raise RegistryError(f"{path} is not a JSON object; delete {folder}")
    return manifest
