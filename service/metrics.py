"""livetune's Prometheus metrics, next to the request metrics BentoML exports itself.

`bentoml serve` runs prometheus-client in multiprocess mode: every API worker and the
Trainer process write their samples to one shared directory, and whichever worker
answers GET /metrics aggregates them all. Events are counted here, where they happen
(predictions and swaps in the API workers, training runs in the Trainer process), and
counters add up across processes. Facts that live in the durable store (pending samples,
online accuracy, the last run's gate) are gauges read from it at scrape time:
service/store_metrics.py.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from prometheus_client import Counter, Gauge, Histogram

# The run metrics live with the trainer loop (it also runs without BentoML); exported here
# too, so this module lists every metric the service serves.
from training.metrics import (  # noqa: F401
    OUTCOMES,
    TRAINING_BUCKETS,
    TRAINING_RUNS,
    TRAINING_SECONDS,
    record_trainer_started,
    record_training_run,
)
from training.store import NewSample

METRICS_PATH = "/metrics"
MAX_SOURCES = 32  # distinct feedback `source` values kept as label values; others are "other"
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
SWAP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
QUEUE_DELAY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
AGREEMENT = ("true", "false", "unknown")  # of a correction with its served prediction

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
REVIEW_SERVED = Counter(
    "livetune_review_items_served", "Items GET /review handed out, each leased to a reviewer."
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


def record_review_served(count: int) -> None:
    REVIEW_SERVED.inc(count)


def _export_feedback_at_zero() -> None:
    # As for runs: the first correction of each kind counts in rate(). Every process
    # creates them (their sum is 0); sources other than the default appear with traffic.
    for agreed in AGREEMENT:
        FEEDBACK.labels(source=SOURCES.label(None), agreed=agreed)


_export_feedback_at_zero()
