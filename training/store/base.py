"""The store interfaces, one per kind of data; SQLite is the embedded default, PostgreSQL
the shared one. Rules that must not differ between backends live in `policy.py`."""

from __future__ import annotations

import abc
from collections.abc import Iterator, Sequence

from training.split import text_key
from training.store import records as data  # the records each interface reads and writes
from training.store.labels import LabelStore


class StoreUnavailable(RuntimeError):
    """The store cannot be reached right now (a database that is down); retry later.

    Callers answer 503 instead of 500, and never acknowledge what was not stored."""


class NewerSchemaError(RuntimeError):
    """The database was migrated by a newer livetune; this code must not write to it."""


class CorrectionStore(abc.ABC):
    """Labeled corrections: durable, append-only, a new label superseding the old one."""

    @abc.abstractmethod
    def add_samples(self, samples: Sequence[data.NewSample]) -> data.AddResult:
        """Store all samples in one transaction, durable on return."""

    @abc.abstractmethod
    def samples(
        self, *, split: str | None = None, after_id: int = 0, include_superseded: bool = False
    ) -> Iterator[data.StoredSample]:
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

    def max_sample_id(self) -> int:
        """The highest sample id stored so far (0 when empty): a data cursor."""
        return max((s.id for s in self.samples(include_superseded=True)), default=0)


class PredictionStore(abc.ABC):
    """A bounded log of served predictions, so a correction can cite one by id or text."""

    @abc.abstractmethod
    def log_predictions(self, records: Sequence[data.PredictionRecord]) -> None:
        """Remember served predictions (one write per batch) and prune past retention."""

    @abc.abstractmethod
    def get_predictions(self, ids: Sequence[str]) -> dict[str, data.PredictionRecord]:
        """The remembered predictions among `ids`; unknown or expired ones are absent."""

    def latest_prediction_for_text(self, texts: Sequence[str]) -> dict[str, data.PredictionRecord]:
        """The most recent remembered prediction for each text (by normalised text)."""
        keys = {text_key(text): text for text in texts}
        found = self.latest_by_text_key(list(keys))
        return {keys[key]: record for key, record in found.items()}

    @abc.abstractmethod
    def latest_by_text_key(self, keys: Sequence[str]) -> dict[str, data.PredictionRecord]:
        """The most recent remembered prediction for each text key (`split.text_key`)."""

    @abc.abstractmethod
    def prune_predictions(self) -> None:
        """Apply the retention bounds now (logging otherwise applies them now and then)."""


class RunStore(abc.ABC):
    """Training runs, durable next to the samples they trained on."""

    @abc.abstractmethod
    def start_run(
        self, *, trigger: str, parent: str | None, data_cursor: int, train_samples: int,
        validation_samples: int,
    ) -> int:  # fmt: skip
        """Record a run as `running`, durably; returns its id."""

    @abc.abstractmethod
    def finish_run(self, run_id: int, *, state: data.RunState | str, reason: str | None,
                   candidate: str | None, report: dict) -> None:  # fmt: skip
        """Record how a run ended: promoted, rejected or failed, and why."""

    @abc.abstractmethod
    def runs(
        self, *, limit: int = 20, states: Sequence[data.RunState | str] = ()
    ) -> list[data.TrainingRun]:
        """The most recent training runs, newest first; only those in `states` if given."""

    @abc.abstractmethod
    def fail_interrupted_runs(self, reason: str) -> int:
        """Mark runs still `running` as failed (their process died); call under the run lock."""

    def last_run(self) -> data.TrainingRun | None:
        """The most recent training run, if any."""
        runs = self.runs(limit=1)
        return runs[0] if runs else None


class WorkerStore(abc.ABC):
    """Heartbeats of the serving workers, so /status on any replica can list them all."""

    @abc.abstractmethod
    def heartbeat(self, worker_id: str, host: str, pid: int, state: dict) -> None:
        """Record that this worker is alive and what it serves (last_seen = now)."""

    @abc.abstractmethod
    def workers(self, *, seen_within_s: float | None = None) -> list[data.WorkerRecord]:
        """Known workers, by id; only those seen in the last `seen_within_s` if given."""

    @abc.abstractmethod
    def forget_worker(self, worker_id: str) -> None:
        """Drop a worker's heartbeat (it is shutting down cleanly)."""


class FeedbackStore(CorrectionStore, LabelStore, PredictionStore, RunStore, WorkerStore):
    """Everything the service and the trainer keep: corrections, the label set, predictions,
    runs and worker heartbeats."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections."""


class ComposedStore(FeedbackStore):
    """A FeedbackStore whose prediction log and heartbeats are objects of their own (as
    both backends keep them: another file, or other tables with other durability)."""

    _predictions: PredictionStore
    _workers: WorkerStore

    def log_predictions(self, records: Sequence[data.PredictionRecord]) -> None:
        self._predictions.log_predictions(records)

    def get_predictions(self, ids: Sequence[str]) -> dict[str, data.PredictionRecord]:
        return self._predictions.get_predictions(ids)

    def latest_by_text_key(self, keys: Sequence[str]) -> dict[str, data.PredictionRecord]:
        return self._predictions.latest_by_text_key(keys)

    def prune_predictions(self) -> None:
        self._predictions.prune_predictions()

    def heartbeat(self, worker_id: str, host: str, pid: int, state: dict) -> None:
        self._workers.heartbeat(worker_id, host, pid, state)

    def workers(self, *, seen_within_s: float | None = None) -> list[data.WorkerRecord]:
        return self._workers.workers(seen_within_s=seen_within_s)

    def forget_worker(self, worker_id: str) -> None:
        self._workers.forget_worker(worker_id)
