"""Settings in, the shared components out: the store, the prediction log, the registry and
the run lock. The service, the trainer and the CLI all build them here, so choosing a
backend is decided in this one place, by the URL each setting holds.

PostgreSQL and S3 are imported only when configured: a host that uses the embedded
backends needs neither psycopg nor boto3.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import partial

from training.locks import Held, file_lock
from training.registry import AdapterStore, LocalRegistry
from training.settings import CoreSettings
from training.store import FeedbackStore, PredictionStore, SQLiteFeedbackStore

LOCK_FILE = "train.lock"


@dataclass
class Backends:
    """What every deployable shares; `predictions` may be the same object as `store`."""

    store: FeedbackStore  # corrections, training runs and worker heartbeats
    predictions: PredictionStore  # the log of served predictions
    registry: AdapterStore
    run_lock: Callable[[], AbstractContextManager[Held]]  # raises TrainingBusy when held

    def close(self) -> None:
        self.store.close()
        if self.predictions is not self.store:
            self.predictions.close()


def open_store(settings: CoreSettings) -> FeedbackStore:
    """SQLite files in the data directory, or PostgreSQL for LIVETUNE_STORE_URL."""
    options = {
        "validation_percent": settings.validation_percent,
        "prediction_max_count": settings.prediction_retention_count,
        "prediction_max_age_s": settings.prediction_retention_hours * 3600,
    }
    url = settings.store_url.get_secret_value()
    if not url:
        return SQLiteFeedbackStore(settings.data_dir, **options)
    from training.store.postgres import PostgresStore

    return PostgresStore(
        url, prepare=settings.store_prepare, run_lease_s=settings.run_lease_s, **options
    )


def open_registry(settings: CoreSettings) -> AdapterStore:
    """The local registry in the data directory, or S3 for LIVETUNE_ADAPTERS_URL."""
    if not settings.adapters_url:
        return LocalRegistry(settings.adapters_dir, keep=settings.keep_adapters)
    from training.registry.s3 import S3Registry

    return S3Registry(
        settings.adapters_url,
        cache_dir=settings.adapters_dir,
        keep=settings.keep_adapters,
        endpoint_url=settings.s3_endpoint_url or None,
    )


def open_backends(settings: CoreSettings) -> Backends:
    """Every shared component for `settings`, opened (schemas created or migrated)."""
    store = open_store(settings)
    if isinstance(store, SQLiteFeedbackStore):  # one host: the kernel's file lock will do
        run_lock = partial(file_lock, settings.data_dir / LOCK_FILE)
    else:  # across hosts: a lease row in the database
        run_lock = store.run_lock
    return Backends(
        store=store, predictions=store, registry=open_registry(settings), run_lock=run_lock
    )
