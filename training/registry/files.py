"""What may be in an adapter folder, and writing it durably: shared by every adapter store.

A store that downloads versions (an object store) runs the same checks on its local
copy before any loader opens it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from training.registry.base import RegistryError

# Pickle-based formats (.bin .pt .pkl) can run code when loaded, so they are refused.
# peft writes a README.md next to its weights; text files are never executed.
ALLOWED_SUFFIXES = (".safetensors", ".json", ".txt", ".md")
MANIFEST = "manifest.json"
SHA256 = re.compile(r"[0-9a-f]{64}")


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
        data = path.read_bytes()
    except FileNotFoundError:
        raise RegistryError(f"{folder} has no {MANIFEST}: never published; delete it") from None
    return parse_manifest(data, where=str(path), fix=f"delete {folder}")


def parse_manifest(data: bytes, where: str, fix: str) -> dict:
    """The manifest object in `data`, or RegistryError naming `where` and the `fix`."""
    try:
        manifest = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise RegistryError(f"{where} is not valid JSON ({err}); {fix}") from err
    if not isinstance(manifest, dict):
        raise RegistryError(f"{where} is not a JSON object; {fix}")
    return manifest


# Checks for stores that hold a version as named objects (an object store): each name must
# be a plain file name, so a downloaded copy is as flat and safe as a local version folder.


def check_file_name(name: object, where: str) -> str:
    """A flat, allowed file name, or RegistryError: no separators, no dot names, no pickles."""
    if not isinstance(name, str) or not name or name in (".", ".."):
        problem = "is not a file name"
    elif "/" in name or "\\" in name or "\x00" in name:
        problem = "is not a flat file name (a path could escape the version folder)"
    elif not name.endswith(ALLOWED_SUFFIXES):
        problem = "is refused: only safetensors, json, txt and md files are kept (pickle runs code)"
    else:
        return name
    raise RegistryError(f"{where}: {name!r} {problem}; delete it from the store")


def file_records(folder: Path) -> dict[str, dict]:
    """name -> {sha256, size} of every file in a checked folder except the manifest."""
    return {
        entry.name: {"sha256": sha256_file(Path(entry.path)), "size": entry.stat().st_size}
        for entry in sorted(os.scandir(folder), key=lambda entry: entry.name)
        if entry.name != MANIFEST
    }


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def listed_files(manifest: dict, where: str) -> dict[str, tuple[str, int]]:
    """The manifest's `files` as name -> (sha256, size), each name checked."""
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise RegistryError(f"{where} lists no files; publish the version again")
    listed = {}
    for name, record in files.items():
        check_file_name(name, where)
        record = record if isinstance(record, dict) else {}
        sha, size = record.get("sha256"), record.get("size")
        if name == MANIFEST or not SHA256.fullmatch(str(sha)) or type(size) is not int or size < 0:
            raise RegistryError(f"{where}: the record of {name!r} is malformed; publish again")
        listed[name] = (sha, size)
    return listed


def check_stored(stored: dict[str, int], listed: dict[str, tuple[str, int]], where: str) -> None:
    """Refuse a stored set of name -> size that is not exactly what the manifest lists."""
    for name, size in stored.items():
        if name == MANIFEST:
            continue
        check_file_name(name, where)
        if name not in listed:
            raise RegistryError(f"{where}: {name!r} is not in the manifest; delete it")
        if size != listed[name][1]:
            raise RegistryError(
                f"{where}: {name} has {size} bytes, the manifest says {listed[name][1]}; "
                "publish the version again"
            )
    missing = sorted(set(listed) - set(stored))
    if missing:
        raise RegistryError(f"{where}: {', '.join(missing)} missing; publish the version again")
