"""livetune's Prometheus metrics, next to the request metrics BentoML exports itself.

`bentoml serve` runs prometheus-client in multiprocess mode: every API worker and the
Trainer process write their samples to one shared directory, and whichever worker
answers GET /metrics aggregates them all. So:
- events are counted where they happen (predictions and swaps in the API workers,
  training runs in the Trainer process), and counters add up across processes;
- facts that live in the durable store (pending samples, online accuracy, the last
  run's gate) are read from it when /metrics is scraped, into gauges that keep the
  most recent value, so every worker reports the same numbers.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import anyio
import bentoml
from bentoml.exceptions import BentoMLException
from prometheus_client import Counter, Gauge, Histogram

from training.schedule import FINISHED, pending_samples
from training.store import FeedbackStore, NewSample, RunState, TrainingRun

log = logging.getLogger("livetune.metrics")
METRICS_PATH = "/metrics"
MAX_SOURCES = 32  # distinct feedback `source` values kept as label values; others are "other"
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
SWAP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
QUEUE_DELAY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
TRAINING_BUCKETS = (10, 30, 60, 120, 300, 600, 1_200, 1_800, 3_600, 7_200)

PREDICTIONS = Counter(
    "livetune_predictions",
    "Texts classified, by predicted label and adapter.",
    ["label", "adapter"],
)
CONFIDENCE = Histogram(
    "livetune_prediction_confidence",
    "Probability of the predicted label.",
    buckets=CONFIDENCE_BUCKETS,
)
FEEDBACK = Counter(
    "livetune_feedback_samples",
    "Corrections newly stored, by source and by whether the served prediction agreed"
    ' ("unknown": no served prediction is linked).',
    ["source", "agreed"],
)
QUEUE_DELAY = Histogram(
    "livetune_batch_queue_delay_seconds",
    "Time a /predict request waited in its worker's queue before its batch ran.",
    buckets=QUEUE_DELAY_BUCKETS,
)
BATCH_SIZE = Histogram(
    "livetune_batch_size_texts", "Texts in each batch the model ran.", buckets=BATCH_BUCKETS
)
IN_FLIGHT = Gauge(
    "livetune_requests_in_flight",
    "/predict requests a worker holds now: queued or in the batch running.",
    multiprocess_mode="liveall",  # one series per live worker
)
SWAPS = Counter("livetune_adapter_swaps", "Adapter versions switched in by a worker.")
SWAP_FAILURES = Counter(
    "livetune_adapter_swap_failures", "Adapter versions a worker could not load."
)
POLL_FAILURES = Counter(
    "livetune_adapter_poll_failures",
    "Polls of CURRENT that could not reach the adapter registry (the worker kept serving).",
)
PREDICTIONS_DROPPED = Counter(
    "livetune_prediction_log_dropped",
    "Served predictions not remembered (queue full, or the store unreachable): a correction"
    " cannot cite their prediction_id.",
)
SWAP_SECONDS = Histogram(
    "livetune_adapter_swap_duration_seconds",
    "Time to load and switch in an adapter version.",
    buckets=SWAP_BUCKETS,
)
ADAPTER_INFO = Gauge(
    "livetune_adapter_info",
    "1 for the adapter version a worker serves, 0 for those it served before.",
    ["version"],
    multiprocess_mode="liveall",  # one series per live worker: shows convergence
)
LABEL_SET_VERSION = Gauge(
    "livetune_label_set_version",
    "The label-set version a worker serves; every change adds one.",
    multiprocess_mode="liveall",  # one series per live worker: shows convergence
)
TRAINING_RUNS = Counter(
    "livetune_training_runs", "Training runs finished by the Trainer, by outcome.", ["outcome"]
)
TRAINING_SECONDS = Histogram(
    "livetune_training_duration_seconds",
    "Wall time of a training run, by outcome.",
    ["outcome"],
    buckets=TRAINING_BUCKETS,
)


def _store_gauge(name: str, documentation: str, labels: Sequence[str] = ()) -> Gauge:
    # Every worker computes the same value from the shared store; keep the freshest.
    return Gauge(name, documentation, labels, multiprocess_mode="mostrecent")


PENDING = _store_gauge(
    "livetune_feedback_pending_samples", "Corrections not yet seen by a finished training run."
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


def record_predictions(labels: Sequence[str], scores: Sequence[float], adapter: str) -> None:
    for label, score in zip(labels, scores):
        PREDICTIONS.labels(label=label, adapter=adapter).inc()
        CONFIDENCE.observe(score)


class FeedbackSources:
    """Bounds the `source` label: the first MAX_SOURCES values seen keep their name."""

    def __init__(self, limit: int = MAX_SOURCES):
        self.limit = limit
        self.seen: set[str] = set()
        self._lock = threading.Lock()

    def label(self, source: str | None) -> str:
        source = source or "unspecified"
        with self._lock:
            if source in self.seen:
                return source
            if len(self.seen) < self.limit:
                self.seen.add(source)
                return source
        return "other"


SOURCES = FeedbackSources()


def record_feedback(samples: Sequence[NewSample], new: Sequence[bool]) -> None:
    """Count the corrections a /feedback call stored (replays are not counted twice)."""
    for sample, stored in zip(samples, new):
        if not stored:
            continue
        if sample.predicted_label is None:
            agreed = "unknown"
        else:
            agreed = "true" if sample.predicted_label == sample.label else "false"
        FEEDBACK.labels(source=SOURCES.label(sample.source), agreed=agreed).inc()


def record_queue_delay(seconds: float) -> None:
    QUEUE_DELAY.observe(seconds)


def record_batch(texts: int) -> None:
    BATCH_SIZE.observe(texts)


def record_in_flight(change: int) -> None:
    IN_FLIGHT.inc(change)


def record_swap(previous: str, version: str, seconds: float) -> None:
    SWAPS.inc()
    SWAP_SECONDS.observe(seconds)
    ADAPTER_INFO.labels(version=previous).set(0)
    ADAPTER_INFO.labels(version=version).set(1)


def record_swap_failure() -> None:
    SWAP_FAILURES.inc()


def record_poll_failure() -> None:
    POLL_FAILURES.inc()


def record_dropped_predictions(count: int) -> None:
    PREDICTIONS_DROPPED.inc(count)


def record_serving(version: str) -> None:
    """The version a worker serves before any swap (the base model)."""
    ADAPTER_INFO.labels(version=version).set(1)


def record_label_set(version: int) -> None:
    LABEL_SET_VERSION.set(version)


def record_training_run(run: TrainingRun) -> None:
    TRAINING_RUNS.labels(outcome=run.state).inc()
    if run.finished_at is not None:
        TRAINING_SECONDS.labels(outcome=run.state).observe(run.finished_at - run.started_at)


def refresh_from_store(store: FeedbackStore, online_window: int) -> None:
    """Set the store-derived gauges; called just before /metrics is rendered."""
    PENDING.set(pending_samples(store))
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


# The review queue (service/review.py).
REVIEW_SERVED = Counter(
    "livetune_review_items_served", "Items GET /review handed out, each leased to a reviewer."
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


def record_review_served(count: int) -> None:
    REVIEW_SERVED.inc(count)


def refresh_review(service) -> None:
    """Set the review queue's store-derived gauges."""
    from service.review import queue_of  # it imports this module: imported when first used

    counts = queue_of(service).counts()
    REVIEW_DEPTH.set(counts.depth)
    REVIEW_LABELED.labels(via="queue").set(counts.labeled_from_queue)
    REVIEW_LABELED.labels(via="elsewhere").set(counts.labeled_elsewhere)
