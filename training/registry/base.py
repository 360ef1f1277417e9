"""The adapter-store interface: published versions, the active one, and local copies.

One implementation a file beside this one (the LoRAX `sources/` layout). Every loader
opens only the local folder that `materialize` returned, so a store on another host
(an object store) downloads and checks a version before anything reads it.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Collection, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

BASE = "base"  # what serves when no adapter is active: the zero-shot head on the base model
# [0-9], not \d: \d also matches non-ASCII digits. \Z, not $: $ accepts a trailing newline.
VERSION_PATTERN = re.compile(r"\Av([0-9]{4,})-[0-9]{8}T[0-9]{6}(?:-[0-9]+)?\Z")


class RegistryError(Exception):
    """A registry problem; the message says what is wrong and what to do."""


class InvalidVersion(RegistryError):
    """A version name that is malformed or escapes the registry."""


class UnknownVersion(InvalidVersion):
    """A well-formed version name that was never published (or has been pruned)."""


class RegistryUnavailable(RegistryError):
    """The registry cannot be reached right now (an object store that is down); retry.

    Serving keeps the adapter it has in memory; the failed poll is counted and shown."""


@dataclass(frozen=True)
class AdapterVersion:
    """A published adapter: its name and its parsed manifest.json."""

    version: str
    manifest: dict


def check_name(version: object) -> str:
    """The version name itself, or InvalidVersion saying why it cannot be one."""
    if not isinstance(version, str):
        raise InvalidVersion(f"adapter version must be a string, not {type(version).__name__}")
    if "\x00" in version:
        reason = "contains a NUL byte"
    elif "/" in version or "\\" in version:
        reason = "contains a path separator"
    elif not VERSION_PATTERN.match(version):
        reason = "does not look like vNNNN-YYYYMMDDTHHMMSS"
    else:
        return version
    raise InvalidVersion(f"invalid adapter version {version!r}: {reason}; use a listed version")


def sequence_number(version: str) -> int:
    return int(VERSION_PATTERN.match(version).group(1))


class AdapterStore(abc.ABC):
    """Versioned adapters and the CURRENT pointer every serving worker follows."""

    @abc.abstractmethod
    def current(self) -> str | None:
        """The active version, or None when the base model serves (or CURRENT is unusable)."""

    @abc.abstractmethod
    def activate(self, version: str) -> AdapterVersion:
        """Point CURRENT at a valid published version."""

    @abc.abstractmethod
    def deactivate(self) -> None:
        """Remove CURRENT, so the base model serves."""

    @abc.abstractmethod
    def versions(self) -> list[AdapterVersion]:
        """Every valid published version, oldest first; invalid ones are logged and skipped."""

    @abc.abstractmethod
    def get(self, version: str) -> AdapterVersion:
        """A published version; InvalidVersion for a bad name, UnknownVersion if absent."""

    @abc.abstractmethod
    def materialize(self, version: str) -> Path:
        """A local folder holding the version's checked files: the only thing loaders open."""

    @abc.abstractmethod
    def new_version_name(self) -> str:
        """The next sequence number and the UTC time: `v0007-20261123T101502`."""

    @abc.abstractmethod
    def staging(self) -> AbstractContextManager[Path]:
        """A fresh empty local folder to write a version into; removed if the body raises."""

    @abc.abstractmethod
    def publish(self, staging: Path, version: str, manifest: dict) -> AdapterVersion:
        """Make the files written into `staging` the published `version` (not activated)."""

    @abc.abstractmethod
    def prune(self, spare: Collection[str] = ()) -> list[str]:
        """Delete old versions beyond the kept number, never the active one nor those in
        `spare` (versions a live worker still serves); returns the names deleted."""

    @abc.abstractmethod
    def clean_staging(self) -> int:
        """Remove what a crash mid-publish left behind; call it only while no writer runs."""

    def history(self) -> Iterator[tuple[AdapterVersion, bool]]:
        """Every version newest first, with whether it is the active one."""
        active = self.current()
        for adapter in reversed(self.versions()):
            yield adapter, adapter.version == active
