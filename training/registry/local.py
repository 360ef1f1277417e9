"""The adapter store on a local file system (the embedded default).

Crash safety: a version is written into a `.staging-*` folder and renamed into place
only once complete, and CURRENT is swapped with os.replace, so after a crash at any
moment every version folder is whole and CURRENT names a whole version or is absent.
Readers in other processes therefore never see a half-written version or CURRENT.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Collection, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from training.registry.base import (
    VERSION_PATTERN,
    AdapterStore,
    AdapterVersion,
    RegistryError,
    UnknownVersion,
    check_name,
    sequence_number,
)
from training.registry.files import (
    MANIFEST,
    check_entries,
    fsync_path,
    read_manifest,
    write_manifest,
)

log = logging.getLogger(__name__)

CURRENT = "CURRENT"
STAGING_PREFIX = ".staging-"


class LocalRegistry(AdapterStore):
    """Versioned adapter folders under one root, and the CURRENT pointer to the active one."""

    def __init__(self, root: str | Path, keep: int = 20):
        if keep < 0:
            raise ValueError(f"keep must be >= 0 versions, got {keep}")
        Path(root).mkdir(parents=True, exist_ok=True)
        # Resolved once, so "directly inside root" compares against the real folder.
        self.root = Path(root).resolve()
        self.keep = keep
        self._last_sequence = 0
        self._lock = threading.Lock()

    def _names(self) -> list[str]:
        """Entries whose name looks like a version, valid or not, oldest first."""
        names = [name for name in os.listdir(self.root) if VERSION_PATTERN.match(name)]
        return sorted(names, key=lambda name: (sequence_number(name), name))

    def new_version_name(self) -> str:
        """The next sequence number and the UTC time: `v0007-20261123T101502`."""
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        with self._lock:
            # Remembering the last number handed out keeps names unique within a second
            # even before the earlier one is published.
            existing = max(map(sequence_number, self._names()), default=0)
            self._last_sequence = max(existing, self._last_sequence) + 1
            return f"v{self._last_sequence:04d}-{stamp}"

    @contextmanager
    def staging(self) -> Iterator[Path]:
        """A fresh empty folder to write a version into; removed if the body raises."""
        path = self.root / f"{STAGING_PREFIX}{uuid.uuid4().hex}"
        path.mkdir()
        try:
            yield path
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
            raise

    def publish(self, staging: Path, version: str, manifest: dict) -> AdapterVersion:
        """Write manifest.json into `staging` and rename it to `version` (not activated)."""
        check_name(version)
        staging = self._check_staging(Path(staging))
        target = self.root / version
        if target.exists() or target.is_symlink():
            raise RegistryError(f"adapter version {version!r} exists; use new_version_name()")
        check_entries(staging)
        full = {**manifest, "version": version}
        write_manifest(staging / MANIFEST, full)
        for entry in staging.iterdir():
            fsync_path(entry)
        fsync_path(staging)
        os.rename(staging, target)
        fsync_path(self.root)
        return AdapterVersion(version, full)

    def _check_staging(self, staging: Path) -> Path:
        """Only a folder made by staging() may be published: never move anything else."""
        if (
            staging.is_symlink()
            or not staging.is_dir()
            or not staging.name.startswith(STAGING_PREFIX)
            or staging.parent.resolve() != self.root
        ):
            raise RegistryError(
                f"{staging} is not a staging folder of {self.root}; write into staging()"
            )
        return staging

    def activate(self, version: str) -> AdapterVersion:
        """Point CURRENT at a valid published version."""
        adapter = self.get(version)
        self._write_current(adapter.version + "\n")
        return adapter

    def _write_current(self, text: str) -> None:
        temp = self.root / f"{STAGING_PREFIX}{uuid.uuid4().hex}-{CURRENT}"
        try:
            with open(temp, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, self.root / CURRENT)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        fsync_path(self.root)

    def deactivate(self) -> None:
        """Remove CURRENT, so the base model serves."""
        (self.root / CURRENT).unlink(missing_ok=True)
        fsync_path(self.root)

    def current(self) -> str | None:
        """The active version, or None when the base model serves (or CURRENT is unusable)."""
        try:
            # O_NOFOLLOW: a CURRENT linked elsewhere would have us read (and log) any file.
            fd = os.open(self.root / CURRENT, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        except OSError as err:
            if err.errno != errno.ELOOP:
                raise
            log.warning("CURRENT is a symlink, which could lead outside the registry: ignored")
            return None
        with os.fdopen(fd, "rb") as f:
            name = f.read(1024).decode("utf-8", "replace").strip()
        if not name:
            return None
        try:
            return self.get(name).version
        except RegistryError as err:
            # A reader must keep serving: fall back to the base model and say why.
            log.warning("CURRENT is not usable (%s); serving the base model", err)
            return None

    def get(self, version: str) -> AdapterVersion:
        """A published version, after checking its name, its folder and its files."""
        folder = self._folder(version)
        return AdapterVersion(version, read_manifest(folder))

    def materialize(self, version: str) -> Path:
        """The version's own folder, checked: on a local disk there is nothing to copy."""
        folder = self._folder(version)
        read_manifest(folder)
        return folder

    def _folder(self, version: str) -> Path:
        check_name(version)
        path = self.root / version
        # A name that is valid but unsafe to load: refused like unsafe files (409, not 400).
        if path.is_symlink():
            raise RegistryError(f"adapter version {version!r} is a symlink; make it a folder")
        if path.resolve().parent != self.root:
            raise RegistryError(f"adapter version {version!r} escapes {self.root}")
        if not path.is_dir():
            known = ", ".join(self._names()) or "none"
            raise UnknownVersion(f"unknown adapter version {version!r}; known versions: {known}")
        check_entries(path)
        return path

    def versions(self) -> list[AdapterVersion]:
        """Every valid published version, oldest first; invalid folders are logged and skipped."""
        found = []
        for name in self._names():
            try:
                found.append(self.get(name))
            except RegistryError as err:
                log.warning("skipping adapter folder %s: %s", name, err)
        return found

    def prune(self, spare: Collection[str] = ()) -> list[str]:
        """Delete all but the `keep` newest versions, sparing CURRENT and `spare`."""
        kept = {self.current(), *spare}
        older = [v.version for v in self.versions()][: -self.keep or None]
        removed = [name for name in older if name not in kept]
        for name in removed:
            # Rename first: a crash mid-delete leaves staging debris, never a partial version.
            doomed = self.root / f"{STAGING_PREFIX}{uuid.uuid4().hex}"
            os.rename(self.root / name, doomed)
            shutil.rmtree(doomed)
        if removed:
            fsync_path(self.root)
        return removed

    def clean_staging(self) -> int:
        """Remove `.staging-*` debris left by a crash; call it only while no writer runs."""
        count = 0
        for entry in os.scandir(self.root):
            if not entry.name.startswith(STAGING_PREFIX):
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                with suppress(FileNotFoundError):
                    os.unlink(entry.path)
            count += 1
        return count
