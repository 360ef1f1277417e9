"""The Trainer inside the real `bentoml serve`: corrections over HTTP become a promoted adapter."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.conftest import TOY_LABELS
from tests.server import start_server, stop_server, wait_for
from tests.test_job import toy_samples
from training.registry import AdapterRegistry
from training.store import SQLiteFeedbackStore

pytestmark = pytest.mark.integration

TINY_TRAINING = {
    "LIVETUNE_TRAIN__EPOCHS": "25",
    "LIVETUNE_TRAIN__BATCH_SIZE": "16",
    "LIVETUNE_TRAIN__LEARNING_RATE": "0.02",
    "LIVETUNE_TRAIN__HEAD_LEARNING_RATE": "0.01",
    "LIVETUNE_TRAIN__HEAD_FIT_STEPS": "60",
    "LIVETUNE_TRAIN__MAX_TOKENS": "16",
    "LIVETUNE_TRAIN__MARGIN": "0.1",
    # Tests wait on these runs: full priority, so a busy machine cannot starve them.
    "LIVETUNE_TRAIN_NICE": "0",
}


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model_dir):
    tmp_path = tmp_path_factory.mktemp("trainer")
    process, base = start_server(
        tmp_path,
        LIVETUNE_BASE_MODEL=str(tiny_model_dir),
        LIVETUNE_LABELS=",".join(TOY_LABELS),
        LIVETUNE_LABEL_TEMPLATE="{name}",
        LIVETUNE_VALIDATION_PERCENT="30",
        LIVETUNE_TRAIN_MIN_NEW_SAMPLES="200",
        LIVETUNE_TRAIN_POLL_S="0.5",
        LIVETUNE_MIN_VALIDATION_SAMPLES="10",
        **TINY_TRAINING,
    )
    try:
        wait_for(f"{base}/readyz", process)
        yield base, tmp_path / "data"
    finally:
        stop_server(process)


def wait_until(condition, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.25)
    return value


def test_enough_corrections_trigger_a_run_that_is_promoted(served):
    base, data_dir = served
    samples = [{"text": text, "label": label} for text, label in toy_samples(240)]
    for start in range(0, len(samples), 100):
        response = httpx.post(f"{base}/feedback", json={"samples": samples[start : start + 100]})
        assert response.status_code == 200, response.text
    registry = AdapterRegistry(data_dir / "adapters")
    version = wait_until(registry.current)
    store = SQLiteFeedbackStore(data_dir)
    run = store.last_run()
    store.close()
    assert (run.state, run.trigger, run.candidate) == ("promoted", "samples", version)
    assert run.report["gate"]["candidate_accuracy"] > run.report["gate"]["current_accuracy"]


def test_train_on_demand_and_409_while_a_run_is_in_progress(served):
    base, data_dir = served
    store = SQLiteFeedbackStore(data_dir)
    runs_before = len(store.runs(limit=100))
    first = httpx.post(f"{base}/train")
    second = httpx.post(f"{base}/train")
    assert first.status_code == 202, first.text
    assert second.status_code == 409
    assert "in progress" in second.json()["error"]
    wait_until(lambda: len(store.runs(limit=100)) > runs_before and store.last_run().finished_at)
    run = store.last_run()
    store.close()
    assert run.trigger == "manual"
    assert run.state in ("promoted", "rejected"), run.reason
