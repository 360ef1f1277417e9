"""Gauges of facts that live in the durable store, read from it when /metrics is scraped.

Pending samples, online accuracy, the last run's gate, the review queue: every API worker
computes the same values from the shared store, and each gauge keeps the most recent one,
so whichever worker answers a scrape reports the same numbers. The events the processes
count themselves are in service/metrics.py.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import anyio
import bentoml
from bentoml.exceptions import BentoMLException
from prometheus_client import Gauge

from service.metrics import METRICS_PATH
from service.review import queue_of
from training.schedule import FINISHED, training_cursor
from training.store import FeedbackStore, RunState

log = logging.getLogger("livetune.metrics")


def _store_gauge(name: str, documentation: str, labels: Sequence[str] = ()) -> Gauge:
    # Every worker computes the same value from the shared store; keep the freshest.
    return Gauge(name, documentation, labels, multiprocess_mode="mostrecent")


PENDING = _store_gauge(
    "livetune_feedback_pending_samples", "Corrections not yet seen by a finished training run."
)
OLDEST_PENDING = _store_gauge(
    "livetune_feedback_oldest_pending_timestamp_seconds",
    "Unix time the oldest pending correction was stored; 0 if none pends.",
)
STORED = _store_gauge("livetune_feedback_stored_samples", "Active corrections in the store.")
LABELS_ACTIVE = _store_gauge(
    "livetune_labels_active", "Labels predicted and accepted in corrections now."
)
LABELS_RETIRED = _store_gauge("livetune_labels_retired", "Labels retired, kept with their history.")
ONLINE_ACCURACY = _store_gauge(
    "livetune_online_accuracy",
    "Share of the most recent corrections linked to a served prediction whose served label"
    " was the label sent.",
)
ONLINE_WINDOW = _store_gauge(
    "livetune_online_accuracy_samples", "Corrections behind livetune_online_accuracy."
)
VALIDATION_ACCURACY = _store_gauge(
    "livetune_training_validation_accuracy",
    "Validation accuracy measured by the last training run's gate: of the adapter in service"
    ' then (model="in_service") and of its candidate (model="candidate").',
    ["model"],
)
LAST_PROMOTION = _store_gauge(
    "livetune_training_last_promotion_timestamp_seconds",
    "Unix time of the last promotion; 0 if none yet.",
)
TRAINING_ACTIVE = _store_gauge(
    "livetune_training_in_progress", "1 while a training run is under way."
)
REVIEW_DEPTH = _store_gauge(
    "livetune_review_queue_depth",
    "Texts GET /review could hand out now: served, not labeled, not leased (among the newest"
    " LIVETUNE_REVIEW_POOL predictions).",
)
REVIEW_LABELED = _store_gauge(
    "livetune_review_labeled_samples",
    'Active corrections of texts GET /review had handed out (via="queue") and of all others'
    ' (via="elsewhere").',
    ["via"],
)


def refresh_from_store(store: FeedbackStore, online_window: int) -> None:
    """Set the store-derived gauges; called just before /metrics is rendered."""
    cursor = training_cursor(store)
    PENDING.set(store.count_samples(after_id=cursor))
    OLDEST_PENDING.set(store.oldest_sample_time(after_id=cursor) or 0)
    STORED.set(store.count_samples())
    label_set = store.label_set()
    LABELS_ACTIVE.set(len(label_set.names()))
    LABELS_RETIRED.set(len(label_set.records) - len(label_set.names()))
    agreed, total = store.agreement(online_window)
    ONLINE_WINDOW.set(total)
    if total:
        ONLINE_ACCURACY.set(agreed / total)
    promoted = store.runs(limit=1, states=(RunState.PROMOTED,))
    LAST_PROMOTION.set(promoted[0].finished_at if promoted else 0)
    last = store.last_run()
    TRAINING_ACTIVE.set(1 if last is not None and last.state == RunState.RUNNING else 0)
    for run in store.runs(limit=20, states=FINISHED):
        gate = run.report.get("gate")
        if gate:
            VALIDATION_ACCURACY.labels(model="in_service").set(gate["current_accuracy"])
            VALIDATION_ACCURACY.labels(model="candidate").set(gate["candidate_accuracy"])
            break


def refresh_review(service) -> None:
    """Set the review queue's store-derived gauges."""
    counts = queue_of(service).counts()
    REVIEW_DEPTH.set(counts.depth)
    REVIEW_LABELED.labels(via="queue").set(counts.labeled_from_queue)
    REVIEW_LABELED.labels(via="elsewhere").set(counts.labeled_elsewhere)


class RefreshOnScrape:
    """ASGI middleware: refresh the store-derived gauges, then let BentoML render /metrics.

    BentoML renders /metrics from the multiprocess files only (no custom collectors), so
    the values read from the store are written just before it does.
    """

    def __init__(self, app, online_window: int):
        self.app = app
        self.online_window = online_window

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] == METRICS_PATH:
            await anyio.to_thread.run_sync(self._refresh)
        await self.app(scope, receive, send)

    def _refresh(self) -> None:
        try:
            service = bentoml.get_current_service()
        except BentoMLException:  # not instantiated yet: nothing stored to report
            return
        try:
            refresh_from_store(service.store, self.online_window)
            refresh_review(service)
        except Exception:  # a scrape must still answer with the other metrics
            log.exception("could not refresh the store metrics")
