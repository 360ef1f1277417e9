"""Settings in, the shared components out: the store, the prediction log, the registry and
the run lock. The service, the trainer and the CLI all build them here, so choosing a
backend (PostgreSQL, an object store) is a decision made in this one place.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import partial

from training.locks import file_lock
from training.registry import AdapterStore, open_registry
from training.settings import CoreSettings
from training.store import FeedbackStore, PredictionStore, SQLiteFeedbackStore

LOCK_FILE = "train.lock"


@dataclass
class Backends:
    """What every deployable shares; `predictions` may be the same object as `store`."""

    store: FeedbackStore  # corrections and training runs
    predictions: PredictionStore  # the log of served predictions
    registry: AdapterStore
    run_lock: Callable[[], AbstractContextManager[None]]  # raises TrainingBusy when held

    def close(self) -> None:
        self.store.close()
        if self.predictions is not self.store:
            self.predictions.close()


def open_store(settings: CoreSettings) -> FeedbackStore:
    """The correction, prediction and run store (SQLite files in the data directory)."""
    return SQLiteFeedbackStore(
        settings.data_dir,
        validation_percent=settings.validation_percent,
        prediction_max_count=settings.prediction_retention_count,
        prediction_max_age_s=settings.prediction_retention_hours * 3600,
    )


def open_backends(settings: CoreSettings) -> Backends:
    """Every shared component for `settings`, opened (schemas created or migrated)."""
    store = open_store(settings)
    return Backends(
        store=store,
        predictions=store,
        registry=open_registry(settings.adapters_dir, keep=settings.keep_adapters),
        run_lock=partial(file_lock, settings.data_dir / LOCK_FILE),
    )
