"""The training run metrics, wherever runs happen: the in-process Trainer of `bentoml serve`
(service/metrics.py re-exports these, and its /metrics serves them with the rest) or
`python -m training run` on a host of its own, which serves them on
LIVETUNE_TRAINER_METRICS_PORT so that the alerts on runs (deploy/alerts.yml) see the
trainer pod too. prometheus-client only: no BentoML here.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram, start_http_server

from training.store import RunState, TrainingRun

TRAINING_BUCKETS = (10, 30, 60, 120, 300, 600, 1_200, 1_800, 3_600, 7_200)
OUTCOMES = (RunState.PROMOTED, RunState.REJECTED, RunState.FAILED)  # of a finished run

TRAINING_RUNS = Counter(
    "livetune_training_runs", "Training runs finished by the Trainer, by outcome.", ["outcome"]
)
TRAINING_SECONDS = Histogram(
    "livetune_training_duration_seconds",
    "Wall time of a training run, by outcome.",
    ["outcome"],
    buckets=TRAINING_BUCKETS,
)


def record_training_run(run: TrainingRun) -> None:
    TRAINING_RUNS.labels(outcome=run.state).inc()
    if run.finished_at is not None:
        TRAINING_SECONDS.labels(outcome=run.state).observe(run.finished_at - run.started_at)


def record_trainer_started() -> None:
    """Export each outcome's run count and duration at 0 before the first run finishes.

    A series otherwise appears at its first increment, which rate() and increase() cannot
    see: the first failed run would not count towards LivetuneTrainingFailing, and a day
    with one run of each outcome would read 0 on the dashboard. Only the process that runs
    the trainer does this: where runs happen elsewhere (the Kubernetes trainer pod), the
    API replicas export no run counts rather than zeros.
    """
    for outcome in OUTCOMES:
        TRAINING_RUNS.labels(outcome=outcome)
        TRAINING_SECONDS.labels(outcome=outcome)


def serve_metrics(port: int, host: str = "0.0.0.0") -> None:
    """GET /metrics on `port` from a thread of its own, with the runs exported at 0."""
    record_trainer_started()
    start_http_server(port, addr=host)
