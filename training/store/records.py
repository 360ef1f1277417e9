"""What the stores hold: labeled corrections, served predictions and training runs."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


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


class RunState(str, Enum):
    """How a training run stands; equal to its plain string, so callers may compare with
    "promoted", put it in JSON or use it as a metric label."""

    RUNNING = "running"
    PROMOTED = "promoted"
    REJECTED = "rejected"
    FAILED = "failed"

    # A str-mixin Enum prints as "RunState.PROMOTED" on 3.11 and formats that way too on
    # 3.12; logs, metric labels and f-strings must see the stored value on every version.
    def __str__(self) -> str:
        return self.value

    def __format__(self, format_spec: str) -> str:
        return format(self.value, format_spec)


@dataclass(frozen=True)
class TrainingRun:
    """One training run: what started it, what it trained on, and how it ended."""

    id: int
    trigger: str  # "samples", "interval", "manual"
    state: RunState
    reason: str | None
    started_at: float
    finished_at: float | None
    parent: str | None  # the adapter in service when the run started ("base" if none)
    candidate: str | None  # the version the run produced, if it got that far
    data_cursor: int  # highest sample id the run could see
    train_samples: int
    validation_samples: int
    report: dict  # metrics, timings, hyper-parameters


@dataclass(frozen=True)
class WorkerRecord:
    """A serving worker's last heartbeat: who it is and what it serves (its `state`)."""

    worker_id: str  # "host:pid", unique among live workers
    host: str
    pid: int
    last_seen: float  # store time of the last heartbeat
    state: dict  # adapter, since, swaps, failed swaps, last error... as the worker says
