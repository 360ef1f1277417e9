"""The online benchmark's side of the running service: its calls, its swaps, its runs."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx

from benchmarks.harness.client import post_all
from benchmarks.harness.data import Split

BATCH = 32  # texts per /predict call, and corrections per /feedback call
EVALUATION_BATCH = 64  # texts per /predict call of the test set, two calls at a time


class Service:
    """The HTTP calls the benchmark makes, and a watcher of /status for swap times."""

    def __init__(self, base: str):
        self.base = base
        self.http = httpx.Client(base_url=base, timeout=120)
        self.served_since: dict[str, float] = {}  # adapter -> first time a worker served it
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, daemon=True)
        self._watcher.start()

    def predict(self, texts: list[str]) -> list[dict]:
        """One POST /predict."""
        return post_all(self.base, "/predict", [{"texts": texts}])[0]

    def correct(self, answers: list[dict], labels: list[str]) -> None:
        """Corrections by prediction_id: the client does not resend the text."""
        samples = [
            {"prediction_id": a["prediction_id"], "label": y, "source": "online-bench"}
            for a, y in zip(answers, labels)
        ]
        post_all(self.base, "/feedback", [{"samples": samples}])

    def status(self) -> dict:
        """GET /status, noting which adapters the workers serve."""
        status = self.http.get("/status").raise_for_status().json()
        self._note(status["workers"])
        return status

    def _note(self, workers: list[dict]) -> None:
        for worker in workers:
            first = self.served_since.get(worker["adapter"], worker["since"])
            self.served_since[worker["adapter"]] = min(first, worker["since"])

    def _watch(self) -> None:
        with httpx.Client(base_url=self.base, timeout=30) as http:
            while not self._stop.wait(0.5):
                try:
                    self._note(http.get("/status").json()["workers"])
                except (httpx.HTTPError, ValueError, KeyError):
                    continue

    def close(self) -> None:
        """Stop the watcher and the client."""
        self._stop.set()
        self._watcher.join()
        self.http.close()


def stream(service: Service, data: Split) -> dict:
    """predict -> correction for every sample; the accuracy of the served predictions."""
    hits = 0
    for start in range(0, len(data.texts), BATCH):
        texts, labels = data.texts[start : start + BATCH], data.labels[start : start + BATCH]
        answers = service.predict(texts)
        hits += sum(a["label"] == y for a, y in zip(answers, labels))
        service.correct(answers, labels)
    return {"samples": len(data.texts), "served_accuracy": hits / max(1, len(data.texts))}


def evaluate(service: Service, test: Split) -> dict:
    """Accuracy on the test set through /predict, and the adapter versions that answered."""
    step = EVALUATION_BATCH
    bodies = [{"texts": test.texts[i : i + step]} for i in range(0, len(test.texts), step)]
    answers = [a for chunk in post_all(service.base, "/predict", bodies, clients=2) for a in chunk]
    hits = sum(a["label"] == y for a, y in zip(answers, test.labels))
    return {
        "accuracy": hits / len(test.labels),
        "adapters": sorted({a["adapter"] for a in answers}),
    }


def caught_up(status: dict) -> bool:
    """Nothing pending, no run in progress, every worker serving CURRENT."""
    last = status["last_training_run"]
    running = last is not None and last["state"] == "running"
    served = {w["adapter"] for w in status["workers"]}
    return status["pending_samples"] == 0 and not running and served == {status["active_adapter"]}


def wait_caught_up(service: Service, timeout: float) -> dict:
    """Poll /status until the trainer has caught up or `timeout` s pass; what was seen."""
    started = time.monotonic()
    while not (done := caught_up(status := service.status())):
        if time.monotonic() - started > timeout:
            break
        time.sleep(1.0)
    return {
        "caught_up": done,
        "waited_s": round(time.monotonic() - started, 1),
        "pending": status["pending_samples"],
        "active": status["active_adapter"],
    }


def training_runs(data_dir: Path, served_since: dict[str, float]) -> list[dict]:
    """Every run of the trainer: trigger -> finish (promotion) -> first served by a worker."""
    from training.store import SQLiteFeedbackStore

    store = SQLiteFeedbackStore(data_dir)
    runs = list(reversed(store.runs(limit=100_000)))
    store.close()
    return [run_record(run, served_since) for run in runs]


def remembered(data_dir: Path, texts: list[str]) -> int:
    """How many of `texts` the service's prediction log holds."""
    from training.split import text_key
    from training.store import SQLiteFeedbackStore

    store = SQLiteFeedbackStore(data_dir)
    try:
        return len(store.latest_by_text_key([text_key(text) for text in texts]))
    finally:
        store.close()


def run_record(run, served_since: dict[str, float]) -> dict:
    """One training run as the results list it."""
    gate = run.report.get("gate", {})
    served = served_since.get(run.candidate) if run.candidate else None
    finished = run.finished_at or run.started_at
    return {
        "id": run.id,
        "trigger": run.trigger,
        "state": run.state,
        "reason": run.reason,
        "data_cursor": run.data_cursor,
        "train_samples": run.train_samples,
        "validation_samples": run.validation_samples,
        "pseudo_labeled": run.report.get("self_training", {}).get("pseudo_labeled"),
        "current_accuracy": gate.get("current_accuracy"),
        "candidate_accuracy": gate.get("candidate_accuracy"),
        "gate_lower_bound": gate.get("lower_bound"),  # candidate - current, where recorded
        "gate_design": (gate.get("evidence") or {}).get("design"),  # cross-validation/holdout
        "recipe": run.report.get("recipe"),  # lora or head (training.recipes)
        "recipes": (gate.get("evidence") or {}).get("recipes"),  # each one's out-of-fold verdict
        "candidate": run.candidate,
        "started_at": run.started_at,
        "trigger_to_finish_s": round(finished - run.started_at, 1),
        "trigger_to_served_s": round(served - run.started_at, 1) if served else None,
    }
