"""Local copies of object-store versions: what every loader opens instead of the bucket.

A version is downloaded into a `.partial-*` folder, each file checked against the sha256
and size its manifest records, and only then renamed to its name, so a folder named like
a version is always whole and checked; a crash or a corrupt object leaves no such folder.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from training.registry.base import RegistryError
from training.registry.files import (
    MANIFEST,
    check_entries,
    fsync_path,
    read_manifest,
    write_manifest,
)

PARTIAL_PREFIX = ".partial-"
STAGING_PREFIX = ".staging-"
Fetch = Callable[[str, BinaryIO, int], tuple[int, str]]  # (name, file, limit) -> (size, sha)


class VersionCache:
    """Checked local folders `<cache>/<version>`, shared by the processes of one host."""

    def __init__(self, folder: str | Path):
        Path(folder).mkdir(parents=True, exist_ok=True)
        self.folder = Path(folder).resolve()

    def cached(self, version: str, manifest: dict, listed: dict[str, tuple[str, int]]) -> bool:
        """Whether `<cache>/<version>` holds this manifest and files of the listed sizes."""
        path = self.folder / version
        if path.is_symlink() or not path.is_dir():
            return False
        try:
            check_entries(path)
            if read_manifest(path) != manifest:
                return False
        except RegistryError:
            return False
        sizes = {e.name: e.stat().st_size for e in os.scandir(path) if e.name != MANIFEST}
        return sizes == {name: size for name, (_, size) in listed.items()}

    def fill(
        self, version: str, manifest: dict, listed: dict[str, tuple[str, int]], fetch: Fetch
    ) -> Path:
        """Download, check and rename a version into place; RegistryError if anything differs."""
        target = self.folder / version
        if target.exists() or target.is_symlink():
            self.discard(version)  # stale or tampered with: cached() said it does not match
        partial = self.folder / f"{PARTIAL_PREFIX}{uuid.uuid4().hex}"
        partial.mkdir()
        try:
            for name, (sha, size) in listed.items():
                self._fetch_one(partial / name, sha, size, fetch, f"{version}/{name}")
            write_manifest(partial / MANIFEST, manifest)
            check_entries(partial)
            fsync_path(partial)
            self._move_into_place(partial, target, manifest, listed)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        return target

    def _fetch_one(self, path: Path, sha: str, size: int, fetch: Fetch, where: str) -> None:
        with open(path, "xb") as f:
            got_size, got_sha = fetch(path.name, f, size)
            f.flush()
            os.fsync(f.fileno())
        if got_size != size or got_sha != sha:
            found = "more" if got_size > size else got_size
            raise RegistryError(
                f"{where} does not match its manifest ({found} bytes of {size}, sha256"
                f" {got_sha[:12]}… instead of {sha[:12]}…): changed after publishing or"
                " corrupted; publish the version again"
            )

    def _move_into_place(self, partial: Path, target: Path, manifest: dict, listed) -> None:
        try:
            os.rename(partial, target)
        except OSError:
            # Another process on this host downloaded the same version first: use its copy.
            if not self.cached(target.name, manifest, listed):
                raise
        fsync_path(self.folder)

    def discard(self, version: str) -> None:
        """Remove a cached copy; renamed first so no reader sees it half-deleted."""
        path = self.folder / version
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            doomed = self.folder / f"{PARTIAL_PREFIX}{uuid.uuid4().hex}"
            os.rename(path, doomed)
            shutil.rmtree(doomed, ignore_errors=True)

    def staging(self) -> Path:
        """A fresh empty folder beside the cache (same file system) to write a version into."""
        path = self.folder / f"{STAGING_PREFIX}{uuid.uuid4().hex}"
        path.mkdir()
        return path

    def is_staging(self, path: Path) -> bool:
        return (
            not path.is_symlink()
            and path.is_dir()
            and path.name.startswith(STAGING_PREFIX)
            and path.parent.resolve() == self.folder
        )

    def clean(self, older_than_s: float) -> int:
        """Remove every staging folder, and partial downloads untouched for `older_than_s`."""
        # Staging folders are the trainer's, which cleans only while it is the one writer;
        # but serving workers of this host download into the same folder at any time, so
        # only a partial download too old to be still written is theirs to lose.
        cutoff = time.time() - older_than_s
        count = 0
        for entry in os.scandir(self.folder):
            path = Path(entry.path)
            stale = entry.name.startswith(PARTIAL_PREFIX) and _newest_mtime(path) < cutoff
            if stale or entry.name.startswith(STAGING_PREFIX):
                shutil.rmtree(path, ignore_errors=True)
                count += 1
        return count


def _newest_mtime(folder: Path) -> float:
    """The latest change to a folder or a file in it (a download appends to one file)."""
    try:
        return max([folder.lstat().st_mtime, *(e.stat().st_mtime for e in os.scandir(folder))])
    except OSError:  # removed meanwhile, or not a folder: nothing to wait for
        return 0.0
