"""When to train: the data cursor of the last finished run, and the triggers after it."""

from __future__ import annotations

import time

from training.store import FeedbackStore, RunState

FINISHED = (RunState.PROMOTED, RunState.REJECTED)  # runs that got as far as training on their data


def training_cursor(store: FeedbackStore) -> int:
    """The data cursor of the last run that finished training (promoted or rejected)."""
    runs = store.runs(limit=1, states=FINISHED)
    return runs[0].data_cursor if runs else 0


def pending_samples(store: FeedbackStore) -> int:
    """Corrections that arrived after the last run that finished training."""
    return store.count_samples(after_id=training_cursor(store))


def samples_needed(trained: int, min_new_samples: int, first_samples: int) -> int:
    """New corrections that start a run after one that trained on `trained` of them.

    The first run waits for `first_samples`; then each waits for the data to double, until
    that is `min_new_samples`: the first corrections are learned from at once (10, 20, 40,
    80...), and a large store is not retrained for every handful.
    """
    return min(min_new_samples, max(first_samples, trained))


def due(
    store: FeedbackStore,
    *,
    min_new_samples: int,
    first_samples: int,
    max_interval_s: float,
    failure_backoff_s: float,
    now: float | None = None,
) -> str | None:
    """Why a run should start now ("samples" or "interval"), or None."""
    now = time.time() if now is None else now
    last = store.last_run()
    backing_off = last and last.state == RunState.FAILED and last.finished_at
    if backing_off and now - last.finished_at < failure_backoff_s:
        return None
    cursor = training_cursor(store)
    new = store.count_samples(after_id=cursor)
    if new >= samples_needed(store.count_samples() - new, min_new_samples, first_samples):
        return "samples"
    oldest = store.oldest_sample_time(after_id=cursor)
    if oldest is not None and now - oldest >= max_interval_s:
        return "interval"
    return None
