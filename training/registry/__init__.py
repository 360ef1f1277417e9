"""Adapter stores: where published adapter versions and the CURRENT pointer live.

`open_registry` picks the implementation; today the local file system, one class a file.
"""

from __future__ import annotations

from pathlib import Path

from training.registry.base import (
    BASE,
    VERSION_PATTERN,
    AdapterStore,
    AdapterVersion,
    InvalidVersion,
    RegistryError,
    RegistryUnavailable,
    UnknownVersion,
    check_name,
)
from training.registry.files import check_entries
from training.registry.local import CURRENT, STAGING_PREFIX, LocalRegistry


def open_registry(root: Path, keep: int) -> AdapterStore:
    """The adapter store for the configured location (a local folder until S3 lands)."""
    return LocalRegistry(root, keep=keep)


__all__ = [
    "BASE",
    "CURRENT",
    "STAGING_PREFIX",
    "VERSION_PATTERN",
    "AdapterStore",
    "AdapterVersion",
    "InvalidVersion",
    "LocalRegistry",
    "RegistryError",
    "RegistryUnavailable",
    "UnknownVersion",
    "check_entries",
    "check_name",
    "open_registry",
]
