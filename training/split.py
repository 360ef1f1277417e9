"""Deterministic train/validation split: a text's split depends on the text alone."""

from __future__ import annotations

import hashlib
import re
import unicodedata

_SPACES = re.compile(r"\s+")


def normalise(text: str) -> str:
    """Case-, width- and whitespace-insensitive form of a text."""
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", text)).strip().casefold()


def text_key(text: str) -> str:
    """Stable identity of a text: sha256 of its normalised form."""
    return hashlib.sha256(normalise(text).encode("utf-8")).hexdigest()


def split_for(key: str, validation_percent: float) -> str:
    """`validation` for a fixed hash bucket of texts, `train` for the rest."""
    bucket = int(key[:8], 16) % 10_000
    return "validation" if bucket < validation_percent * 100 else "train"
