"""Durable storage of labeled corrections and of recent predictions."""

from training.store.base import (
    AddResult,
    FeedbackStore,
    NewSample,
    PredictionRecord,
    StoredSample,
    TrainingRun,
)
from training.store.sqlite import SQLiteFeedbackStore

__all__ = [
    "AddResult",
    "FeedbackStore",
    "NewSample",
    "PredictionRecord",
    "SQLiteFeedbackStore",
    "StoredSample",
    "TrainingRun",
]
