"""The Trainer inside the real `bentoml serve`: corrections over HTTP become a promoted adapter."""

from __future__ import annotations

import httpx
import pytest

from benchmarks.harness.server import running_server, wait_until
from tests.factories import tiny_training_env, toy_samples
from training.registry import LocalRegistry
from training.store import SQLiteFeedbackStore

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model_dir):
    tmp_path = tmp_path_factory.mktemp("trainer")
    with running_server(
        tmp_path,
        LIVETUNE_TRAIN_MIN_NEW_SAMPLES="200",
        LIVETUNE_TRAIN_POLL_S="0.5",
        **tiny_training_env(tiny_model_dir),
    ) as server:
        yield server.base, server.data_dir


def test_enough_corrections_trigger_a_run_that_is_promoted(served):
    base, data_dir = served
    samples = [{"text": text, "label": label} for text, label in toy_samples(240)]
    for start in range(0, len(samples), 100):
        response = httpx.post(f"{base}/feedback", json={"samples": samples[start : start + 100]})
        assert response.status_code == 200, response.text
    registry = LocalRegistry(data_dir / "adapters")
    version = wait_until(registry.current)
    store = SQLiteFeedbackStore(data_dir)
    run = store.last_run()
    store.close()
    assert (run.state, run.trigger, run.candidate) == ("promoted", "samples", version)
    assert run.report["gate"]["candidate_accuracy"] > run.report["gate"]["current_accuracy"]
    # GET /adapters shows the evidence it was promoted on: the folds and the bound.
    [listed] = [a for a in httpx.get(f"{base}/adapters").json() if a["version"] == version]
    gate = listed["gate"]
    assert gate["lower_bound"] >= -gate["noninferiority"]
    assert gate["evidence"]["design"] == "cross-validation"  # 240 corrections are few
    # Two recipes were cross-validated: the first to pass did so at Holm's 97.5%.
    recipes = gate["evidence"]["recipes"]
    assert set(recipes) == {"head", "lora"} and gate["evidence"]["recipe"] in recipes
    assert max(r["confidence"] for r in recipes.values() if r["promote"]) == 0.975
    assert gate["confidence"] == recipes[gate["evidence"]["recipe"]]["confidence"]
    assert sum(fold["scored"] for fold in gate["evidence"]["folds"]) == run.validation_samples
    assert listed["seen"]["cursor"] == run.data_cursor


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
