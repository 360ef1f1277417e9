"""Deterministic train/validation split: by a hash of the text, and how much data there is."""

from __future__ import annotations

import hashlib
import math
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


# While data is scarce the gate holds out more than the configured floor: about
# EARLY_HOLDOUT x sqrt(n) of n texts (10 of 20, 25 of 100, 79 of 1,000), never more than
# half, never less than the floor. The share only shrinks as the data cursor grows, so
# a text the gate held out can later move to training, never the other way round: every
# text in a gate's validation set was held out from every adapter trained before it.
EARLY_HOLDOUT = 2.5
MAX_HOLDOUT_PERCENT = 50.0


def holdout_percent(data_cursor: int, floor_percent: float) -> float:
    """Percent of texts (by hash bucket) a run at `data_cursor` holds out for its gate."""
    early = 100 * EARLY_HOLDOUT / math.sqrt(max(data_cursor, 1))
    return max(floor_percent, min(MAX_HOLDOUT_PERCENT, early))
