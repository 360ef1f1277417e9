"""Writes served predictions to the store off the request path.

The inference thread only enqueues; a writer thread drains everything queued into one
transaction, so /predict never waits on SQLite and many batches share one commit.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Sequence

from service.metrics import record_dropped_predictions
from training.store import PredictionRecord, PredictionStore

log = logging.getLogger(__name__)
MAX_QUEUED = 100_000  # past this, predictions are dropped (feedback by their id will 400)


class PredictionLog:
    def __init__(self, store: PredictionStore):
        self.store = store
        self._queue: queue.Queue[list[PredictionRecord]] = queue.Queue(maxsize=MAX_QUEUED)
        self._idle = threading.Condition()
        self._pending = 0
        threading.Thread(target=self._drain, name="prediction-log", daemon=True).start()

    def add(self, records: Sequence[PredictionRecord]) -> None:
        """Queue a batch's predictions; never blocks."""
        with self._idle:
            self._pending += 1
        try:
            self._queue.put_nowait(list(records))
        except queue.Full:
            self._done(1)
            record_dropped_predictions(len(records))
            log.warning("prediction log is full: %d predictions not remembered", len(records))

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything queued so far is written."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def _drain(self) -> None:
        while True:
            batches = [self._queue.get()]
            while not self._queue.empty():
                batches.append(self._queue.get_nowait())
            records = [r for batch in batches for r in batch]
            try:
                self.store.log_predictions(records)
            except Exception as exc:  # serving goes on; only feedback by these ids is lost
                record_dropped_predictions(len(records))
                log.warning("could not log %d predictions: %s", len(records), exc)
            self._done(len(batches))

    def _done(self, count: int) -> None:
        with self._idle:
            self._pending -= count
            self._idle.notify_all()
