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
    def ids_for_client_ids(self, client_ids: Sequence[str]) -> dict[str, int]:
        """{client id: sample id} for those of `client_ids` stored, active or not."""

    @abc.abstractmethod
    def active_by_key(self, keys: Sequence[str]) -> dict[str, dict[str, int]]:
        """{text key: {label: id}} of the active (not superseded) samples with these keys."""

    @abc.abstractmethod
    def insert(self, sample: NewSample, *, key: str, split: str, created_at: float) -> int:
        """Store a new active sample; returns its id (ids grow with insertion order)."""

    @abc.abstractmethod
    def supersede_others(self, key: str, winner_id: int) -> None:
        """Set superseded_by = winner_id on every other active sample with this text key."""


def add_samples(
    writer: SampleWriter, samples: Sequence[NewSample], *, validation_percent: float, now: float
) -> AddResult:
    """Store each sample unless it is a duplicate; the caller commits, or rolls all back.

    What the batch touches is read in two queries up front, then kept up to date as each
    sample is stored: under the writer's transaction nothing else changes it, and a store
    across the network then costs one round trip a new sample instead of four.
    """
    keys = [text_key(sample.text) for sample in samples]
    replayed = writer.ids_for_client_ids([s.client_id for s in samples if s.client_id])
    active = writer.active_by_key(sorted(set(keys)))
    ids, new = [], []
    for sample, key in zip(samples, keys):
        existing = replayed.get(sample.client_id) if sample.client_id else None
        if existing is None:  # a replayed client id, else the same text and label
            existing = active.get(key, {}).get(sample.label)
        if existing is None:
            sample_id = insert_winner(writer, sample, key, active, validation_percent, now)
            if sample.client_id:
                replayed[sample.client_id] = sample_id
        ids.append(sample_id if existing is None else existing)
        new.append(existing is None)
    return AddResult(ids=ids, new=new)


def insert_winner(
    writer: SampleWriter,
    sample: NewSample,
    key: str,
    active: dict[str, dict[str, int]],
    validation_percent: float,
    now: float,
) -> int:
    """Same text, new label: the older answer stays as history, the new one wins."""
    split = split_for(key, validation_percent)
    sample_id = writer.insert(sample, key=key, split=split, created_at=now)
    if active.get(key):  # a brand-new text has nothing to supersede: no statement
        writer.supersede_others(key, sample_id)
    active[key] = {sample.label: sample_id}
    return sample_id
