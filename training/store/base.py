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
    new: list[bool]  # per input sample: stored by this call (False: a duplicate)

    @property
    def duplicates(self) -> int:
        return self.new.count(False)


@dataclass(frozen=True)
class TrainingRun:
    """One training run: what started it, what it trained on, and how it ended."""

    id: int
    trigger: str  # "samples", "interval", "manual"
    state: str  # "running", "promoted", "rejected", "failed"
    reason: str | None
    started_at: float
    finished_at: float | None
    parent: str | None  # the adapter in service when the run started ("base" if none)
    candidate: str | None  # the version the run produced, if it got that far
    data_cursor: int  # highest sample id the run could see
    train_samples: int
    validation_samples: int
    report: dict  # metrics, timings, hyper-parameters


RUN_STATES = ("running", "promoted", "rejected", "failed")


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
    def oldest_sample_time(self, *, after_id: int = 0) -> float | None:
        """created_at of the oldest active sample above `after_id`, None if there is none."""

    @abc.abstractmethod
    def agreement(self, window: int) -> tuple[int, int]:
        """(agreed, total) over the last `window` corrections linked to a served prediction:
        how often the served label was the label the client sent."""

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
    def start_run(
        self, *, trigger: str, parent: str | None, data_cursor: int, train_samples: int,
        validation_samples: int,
    ) -> int:  # fmt: skip
        """Record a run as `running`, durably; returns its id."""

    @abc.abstractmethod
    def finish_run(
        self, run_id: int, *, state: str, reason: str | None, candidate: str | None, report: dict
    ) -> None:
        """Record how a run ended: promoted, rejected or failed, and why."""

    @abc.abstractmethod
    def runs(self, *, limit: int = 20, states: Sequence[str] = ()) -> list[TrainingRun]:
        """The most recent training runs, newest first; only those in `states` if given."""

    @abc.abstractmethod
    def fail_interrupted_runs(self, reason: str) -> int:
        """Mark runs still `running` as failed (their process died); call under the run lock."""

    def last_run(self) -> TrainingRun | None:
        """The most recent training run, if any."""
        runs = self.runs(limit=1)
        return runs[0] if runs else None

    def max_sample_id(self) -> int:
        """The highest sample id stored so far (0 when empty): a data cursor."""
        return max((s.id for s in self.samples(include_superseded=True)), default=0)

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections."""
