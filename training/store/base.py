"""The feedback store interface: SQLite is the embedded default, PostgreSQL can follow."""

from __future__ import annotations

import abc
from collections.abc import Iterator, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class PredictionRecord:
    """A served prediction, remembered so a correction can cite its id."""

    id: str
    text: str
    label: str
    score: float
    adapter: str
    created_at: float = 0.0
    top: tuple[tuple[str, float], ...] = ()  # the top-k (label, probability) pairs served


@dataclass(frozen=True)
class NewSample:
    """A correction as accepted from a client, text already resolved."""

    text: str
    label: str
    source: str | None = None
    client_id: str | None = None
    prediction_id: str | None = None
    predicted_label: str | None = None
    adapter: str | None = None


@dataclass(frozen=True)
class StoredSample:
    id: int
    text: str
    label: str
    split: str
    source: str | None
    client_id: str | None
    prediction_id: str | None
    predicted_label: str | None
    adapter: str | None
    created_at: float
    superseded_by: int | None


@dataclass(frozen=True)
class AddResult:
    ids: list[int]  # one per input sample; a duplicate gets the id already stored
    duplicates: int


class FeedbackStore(abc.ABC):
    """Labeled corrections (durable, append-only with supersede) and a bounded prediction log."""

    @abc.abstractmethod
    def add_samples(self, samples: Sequence[NewSample]) -> AddResult:
        """Store all samples in one transaction, durable on return."""

    @abc.abstractmethod
    def samples(
        self, *, split: str | None = None, after_id: int = 0, include_superseded: bool = False
    ) -> Iterator[StoredSample]:
        """Stored samples in id order; by default only the active (not superseded) ones."""

    @abc.abstractmethod
    def count_samples(self, *, after_id: int = 0) -> int:
        """How many active samples have an id above `after_id` (the training cursor)."""

    @abc.abstractmethod
    def log_predictions(self, records: Sequence[PredictionRecord]) -> None:
        """Remember served predictions (one write per batch) and prune past retention."""

    @abc.abstractmethod
    def get_predictions(self, ids: Sequence[str]) -> dict[str, PredictionRecord]:
        """The remembered predictions among `ids`; unknown or expired ones are absent."""

    @abc.abstractmethod
    def latest_prediction_for_text(self, texts: Sequence[str]) -> dict[str, PredictionRecord]:
        """The most recent remembered prediction for each text (by normalised text)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections."""
