"""Durable storage of labeled corrections, recent predictions and training runs."""

from training.store.base import (
    CorrectionStore,
    FeedbackStore,
    PredictionStore,
    RunStore,
    StoreUnavailable,
    WorkerStore,
)
from training.store.policy import SampleWriter
from training.store.records import (
    AddResult,
    NewSample,
    PredictionRecord,
    RunState,
    StoredSample,
    TrainingRun,
    WorkerRecord,
)
from training.store.sqlite import SQLiteFeedbackStore
from training.store.sqlite_predictions import SQLitePredictionLog
from training.store.sqlite_schema import NewerSchemaError

__all__ = [
    "AddResult",
    "CorrectionStore",
    "FeedbackStore",
    "NewSample",
    "NewerSchemaError",
    "PredictionRecord",
    "PredictionStore",
    "RunState",
    "RunStore",
    "SQLiteFeedbackStore",
    "SQLitePredictionLog",
    "SampleWriter",
    "StoreUnavailable",
    "StoredSample",
    "TrainingRun",
    "WorkerRecord",
    "WorkerStore",
]
