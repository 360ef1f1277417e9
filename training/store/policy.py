"""What adding corrections means, for every backend: split, dedupe and supersede.

A backend only supplies the few `SampleWriter` primitives, run inside the one transaction
of an `add_samples` call, so the rules below cannot drift between SQLite and PostgreSQL.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

from training.split import split_for, text_key
from training.store.records import AddResult, NewSample


class SampleWriter(abc.ABC):
    """A backend's sample primitives, all inside one open write transaction."""

    @abc.abstractmethod
    def id_for_client_id(self, client_id: str) -> int | None:
        """The id of the sample stored under this client id, active or not."""

    @abc.abstractmethod
    def active_id(self, key: str, label: str) -> int | None:
        """The id of the active (not superseded) sample with this text key and label."""

    @abc.abstractmethod
    def insert(self, sample: NewSample, *, key: str, split: str, created_at: float) -> int:
        """Store a new active sample; returns its id (ids grow with insertion order)."""

    @abc.abstractmethod
    def supersede_others(self, key: str, winner_id: int) -> None:
        """Set superseded_by = winner_id on every other active sample with this text key."""


def stored_id(writer: SampleWriter, sample: NewSample, key: str) -> int | None:
    """The id already stored for a replayed client id or an identical active sample."""
    if sample.client_id is not None:
        replayed = writer.id_for_client_id(sample.client_id)
        if replayed is not None:
            return replayed
    return writer.active_id(key, sample.label)


def add_samples(
    writer: SampleWriter, samples: Sequence[NewSample], *, validation_percent: float, now: float
) -> AddResult:
    """Store each sample unless it is a duplicate; the caller commits, or rolls all back."""
    ids, new = [], []
    for sample in samples:
        key = text_key(sample.text)
        existing = stored_id(writer, sample, key)
        if existing is None:
            ids.append(insert_winner(writer, sample, key, validation_percent, now))
        else:
            ids.append(existing)
        new.append(existing is None)
    return AddResult(ids=ids, new=new)


def insert_winner(
    writer: SampleWriter, sample: NewSample, key: str, validation_percent: float, now: float
) -> int:
    """Same text, new label: the older answer stays as history, the new one wins."""
    split = split_for(key, validation_percent)
    sample_id = writer.insert(sample, key=key, split=split, created_at=now)
    writer.supersede_others(key, sample_id)
    return sample_id
