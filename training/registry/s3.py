"""The adapter store on S3 or an S3-compatible object store (MinIO, Ceph, R2).

Objects under `s3://bucket/prefix/`:
    versions/<version>/<file>          the adapter's files, uploaded first
    versions/<version>/manifest.json   uploaded last, with each file's sha256 and size
    CURRENT                            the active version's name, replaced in one PUT
A version exists once its manifest does: files without one are an upload in progress or
a crash, never listed nor activated. CURRENT is only ever written by `activate`, and
conditionally on the ETag it read, so of two racing promoters one is told it lost.
Loaders never read the bucket: `materialize` downloads and checks a local copy first.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path

from botocore.exceptions import ClientError

from training.registry.base import (
    VERSION_PATTERN,
    AdapterStore,
    AdapterVersion,
    RegistryError,
    RegistryUnavailable,
    UnknownVersion,
    check_name,
    sequence_number,
)
from training.registry.files import (
    MANIFEST,
    check_entries,
    check_stored,
    file_records,
    listed_files,
    parse_manifest,
    write_manifest,
)
from training.registry.s3_bucket import Bucket, StoredObject, status
from training.registry.s3_cache import VersionCache

log = logging.getLogger(__name__)

CURRENT = "CURRENT"
VERSIONS = "versions/"
MAX_MANIFEST_BYTES = 1 << 20
# clean_staging runs under the run lock (the store's, across hosts), so no other trainer
# is publishing: every manifest-less upload in the bucket is debris of a dead run. Partial
# downloads in the local cache may belong to a serving worker of this host still at it:
# only those older than this are taken for debris.
STALE_DOWNLOAD_S = 15 * 60

Stored = dict[str, dict[str, StoredObject]]  # version -> file name -> object


class S3Registry(AdapterStore):
    """Versioned adapters and CURRENT in a bucket, with checked local copies in `cache_dir`."""

    def __init__(
        self,
        url: str,
        cache_dir: str | Path,
        keep: int = 20,
        endpoint_url: str | None = None,
    ):
        if keep < 0:
            raise ValueError(f"keep must be >= 0 versions, got {keep}")
        self.bucket = Bucket(url, endpoint_url or None)
        self.cache = VersionCache(cache_dir)
        self.keep = keep
        self._pointer: tuple[str | None, str | None] = (None, None)  # CURRENT's ETag, its name
        self._published: set[str] = set()  # versions whose manifest was seen
        self._manifests: dict[str, tuple[str, dict]] = {}  # version -> (ETag, manifest)
        self._last_sequence = 0
        self._lock = threading.Lock()

    def _where(self, version: str) -> str:
        return f"{self.bucket.where}{VERSIONS}{version}"

    def _stored(self, version: str = "") -> Stored:
        """What the bucket holds under versions/ (or one version), in one listing."""
        prefix = f"{VERSIONS}{version}/" if version else VERSIONS
        found: Stored = {}
        with self.bucket.calls("listing adapter versions"):
            for item in self.bucket.list(prefix):
                name, slash, file = item.key[len(VERSIONS) :].partition("/")
                if slash and VERSION_PATTERN.match(name):
                    found.setdefault(name, {})[file] = item
        return found

    def current(self) -> str | None:
        """The active version, or None; one conditional GET of CURRENT (304 while unchanged)."""
        etag, named = self._pointer
        conditions = {"IfNoneMatch": etag} if etag else {}
        with self.bucket.calls("reading CURRENT"):
            try:
                stored = self.bucket.read(CURRENT, 1024, quick=True, **conditions)
            except ClientError as err:
                if status(err) != 304:
                    raise
                return named
        data, etag = stored or (b"", None)
        named = self._usable(data.decode("utf-8", "replace").strip())
        self._pointer = (etag, named)
        return named

    def _usable(self, name: str) -> str | None:
        """`name` if it is a published version; else None, with a warning saying why."""
        if not name:
            return None
        try:
            check_name(name)
            if name not in self._published:
                with self.bucket.calls(f"reading {name}/{MANIFEST}"):
                    manifest = self.bucket.read(f"{VERSIONS}{name}/{MANIFEST}", 1, quick=True)
                if manifest is None:
                    raise UnknownVersion(f"unknown adapter version {name!r}: no manifest")
                self._published.add(name)
        except RegistryUnavailable:
            raise
        except RegistryError as err:
            # A reader must keep serving: fall back to the base model and say why.
            log.warning("CURRENT is not usable (%s); serving the base model", err)
            return None
        return name

    def activate(self, version: str) -> AdapterVersion:
        """Point CURRENT at a valid published version, unless someone else moved it first."""
        with self.bucket.calls("reading CURRENT"):
            etag = (self.bucket.read(CURRENT, 1024) or (b"", None))[1]
        adapter = self.get(version)
        lost = (
            f"CURRENT changed while activating {version} (another promoter or an operator"
            " moved it); read the active version again and retry if still wanted"
        )
        with self.bucket.calls(f"activating {version}"):
            etag = self.bucket.put_if(CURRENT, f"{version}\n".encode(), etag, lost)
        self._pointer = (etag, version)
        return adapter

    def deactivate(self) -> None:
        """Remove CURRENT, so the base model serves."""
        with self.bucket.calls("removing CURRENT"):
            self.bucket.delete([CURRENT])
        self._pointer = (None, None)

    def get(self, version: str) -> AdapterVersion:
        """A published version, its manifest checked against what the bucket holds."""
        check_name(version)
        objects = self._stored(version).get(version, {})
        if MANIFEST not in objects:
            known = ", ".join(n for n, o in self._stored().items() if MANIFEST in o) or "none"
            half = " (files without a manifest: an unfinished upload)" if objects else ""
            raise UnknownVersion(
                f"unknown adapter version {version!r}{half}; known versions: {known}"
            )
        return self._checked(version, objects)

    def _checked(self, version: str, objects: dict[str, StoredObject]) -> AdapterVersion:
        """The version's manifest (cached by ETag), refusing files it does not list."""
        where = self._where(version)
        entry = objects[MANIFEST]
        cached = self._manifests.get(version)
        if cached is None or cached[0] != entry.etag:
            with self.bucket.calls(f"reading {version}/{MANIFEST}"):
                stored = self.bucket.read(entry.key, MAX_MANIFEST_BYTES)
            if stored is None:
                raise UnknownVersion(f"adapter version {version!r} was just deleted (pruned)")
            fix = f"delete {where}/ and publish again"
            cached = (stored[1], parse_manifest(stored[0], where=f"{where}/{MANIFEST}", fix=fix))
            self._manifests[version] = cached
        manifest = cached[1]
        stored = {name: item.size for name, item in objects.items()}
        check_stored(stored, listed_files(manifest, where), where)
        self._published.add(version)
        return AdapterVersion(version, manifest)

    def versions(self) -> list[AdapterVersion]:
        """Every valid published version, oldest first; invalid ones are logged and skipped."""
        return self._versions_in(self._stored())

    def _versions_in(self, stored: Stored) -> list[AdapterVersion]:
        found = []
        for name in sorted(stored, key=lambda name: (sequence_number(name), name)):
            if MANIFEST not in stored[name]:
                continue  # never published (yet): not a version, and not worth a warning
            try:
                found.append(self._checked(name, stored[name]))
            except RegistryUnavailable:
                raise
            except RegistryError as err:
                log.warning("skipping adapter version %s: %s", name, err)
        return found

    def materialize(self, version: str) -> Path:
        """A local checked copy of the version in the cache, downloaded on first use."""
        adapter = self.get(version)
        listed = listed_files(adapter.manifest, self._where(version))
        if self.cache.cached(version, adapter.manifest, listed):
            return self.cache.folder / version

        def fetch(name, file, limit):
            return self.bucket.download(f"{VERSIONS}{version}/{name}", file, limit)

        with self.bucket.calls(f"downloading {version}"):
            return self.cache.fill(version, adapter.manifest, listed, fetch)

    def new_version_name(self) -> str:
        """The next sequence number after every name in the bucket and handed out here."""
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        existing = max(map(sequence_number, self._stored()), default=0)
        with self._lock:
            self._last_sequence = max(existing, self._last_sequence) + 1
            return f"v{self._last_sequence:04d}-{stamp}"

    @contextmanager
    def staging(self) -> Iterator[Path]:
        """A fresh empty local folder to write a version into; removed once done."""
        path = self.cache.staging()
        try:
            yield path
        finally:  # uploaded or failed: the local files are of no further use
            shutil.rmtree(path, ignore_errors=True)

    def publish(self, staging: Path, version: str, manifest: dict) -> AdapterVersion:
        """Upload the files written into `staging`, then the manifest (not activated)."""
        check_name(version)
        staging = Path(staging)
        if not self.cache.is_staging(staging):
            raise RegistryError(f"{staging} is not a staging folder of this registry")
        check_entries(staging)
        full = {**manifest, "version": version, "files": file_records(staging)}
        write_manifest(staging / MANIFEST, full)  # refuses non-JSON before any upload
        if self._stored(version):
            raise RegistryError(f"adapter version {version!r} exists; use new_version_name()")
        with self.bucket.calls(f"uploading {version}"):
            for name in full["files"]:
                with open(staging / name, "rb") as f:
                    self.bucket.put(f"{VERSIONS}{version}/{name}", f)
        # Checked again before the manifest makes the version real: every file must be
        # there as uploaded (a store that lost one, or a clean_staging run outside the
        # run lock, must not yield a version that cannot be loaded).
        stored = {n: o.size for n, o in self._stored(version).get(version, {}).items()}
        check_stored(stored, listed_files(full, self._where(version)), self._where(version))
        lost = f"adapter version {version!r} was published meanwhile; use new_version_name()"
        with self.bucket.calls(f"publishing {version}"):
            body = (staging / MANIFEST).read_bytes()
            self.bucket.put_if(f"{VERSIONS}{version}/{MANIFEST}", body, None, lost)
        self._published.add(version)
        return AdapterVersion(version, full)

    def prune(self, spare: Collection[str] = ()) -> list[str]:
        """Delete all but the `keep` newest versions, sparing CURRENT and `spare`."""
        kept = {self.current(), *spare}
        stored = self._stored()
        older = [v.version for v in self._versions_in(stored)][: -self.keep or None]
        removed = [name for name in older if name not in kept]
        for name in removed:
            # The manifest goes first: a crash mid-delete leaves an unpublished upload
            # (never listed, cleaned later), never a listed version missing files.
            files = [item.key for file, item in stored[name].items() if file != MANIFEST]
            with self.bucket.calls(f"deleting {name}"):
                self.bucket.delete([stored[name][MANIFEST].key])
                self.bucket.delete(files)
            self._published.discard(name)
            self._manifests.pop(name, None)
            self.cache.discard(name)
        return removed

    def clean_staging(self) -> int:
        """Delete manifest-less uploads (a publish that died) and old local debris."""
        count = 0
        for name, objects in self._stored().items():
            if MANIFEST in objects:
                continue
            with self.bucket.calls(f"deleting the unfinished upload {name}"):
                self.bucket.delete([item.key for item in objects.values()])
            count += 1
        return count + self.cache.clean(STALE_DOWNLOAD_S)
