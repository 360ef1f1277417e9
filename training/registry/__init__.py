"""Adapter stores: where published adapter versions and the CURRENT pointer live.

One implementation a file: the local file system (`local.py`) and an S3-compatible
object store (`s3.py`); `training/backends.py` picks one from the settings.
"""

from __future__ import annotations

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


def __getattr__(name: str):
    # S3Registry is loaded on first use, so importing the package never imports boto3.
    if name == "S3Registry":
        from training.registry.s3 import S3Registry

        return S3Registry
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    "S3Registry",
    "UnknownVersion",
    "check_entries",
    "check_name",
]
