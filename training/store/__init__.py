"""Durable storage of labeled corrections, recent predictions and training runs."""

from training.store.base import (
    CorrectionStore,
    FeedbackStore,
    PredictionStore,
    RunStore,
    StoreUnavailable,
    WorkerStore,
)
from training.store.copy import copy_store
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
    "PostgresStore",
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
    "copy_store",
]


def __getattr__(name: str):
    # PostgresStore imports psycopg: loaded on first use, so that a host on SQLite needs
    # neither psycopg nor its import time.
    if name == "PostgresStore":
        from training.store.postgres import PostgresStore

        return PostgresStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
