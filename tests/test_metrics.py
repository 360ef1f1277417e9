"""Prometheus metrics: scraped from the real server with two workers and its Trainer.

The server is driven through predictions, corrections, a training run and swaps
(good and failed); every scrape, whichever worker answers it, must add up to what the
test did.
"""

from __future__ import annotations

import math
from collections import Counter as Tally

import httpx
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.harness.server import running_server, wait_until
from service import metrics, store_metrics
from tests.factories import TOY_LABELS, publish_adapter, tiny_training_env, toy_samples
from training.registry import LocalRegistry
from training.store import NewSample, SQLiteFeedbackStore

WORKERS = 2


def scrape(base: str) -> dict[tuple[str, tuple], float]:
    """Every sample of a /metrics answer, keyed by (name, sorted labels)."""
    response = httpx.get(f"{base}/metrics")
    assert response.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: dict, name: str, **labels: str) -> float:
    """Sum of `name` over the series whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, key), v in samples.items() if n == name and wanted <= set(key))


def serving_pids(samples: dict, version: str) -> set[str]:
    """The workers whose livetune_adapter_info says they serve `version`."""
    return {
        dict(key)["pid"]
        for (name, key), v in samples.items()
        if name == "livetune_adapter_info" and dict(key)["version"] == version and v == 1
    }


def scrapes_agree(base: str, check, times: int = 6) -> None:
    """`check` holds on several scrapes, so on whichever worker answers each of them."""
    for _ in range(times):
        check(scrape(base))


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model_dir):
    tmp_path = tmp_path_factory.mktemp("metrics")
    with running_server(
        tmp_path,
        LIVETUNE_WORKERS=str(WORKERS),
        LIVETUNE_TRAIN_MIN_NEW_SAMPLES="1000000",  # runs start on POST /train only
        LIVETUNE_TRAIN_FIRST_SAMPLES="1000000",
        LIVETUNE_TRAIN_POLL_S="0.5",
        **tiny_training_env(tiny_model_dir),
    ) as server:
        yield server.base, server.data_dir


@pytest.fixture(scope="module")
def traffic(served):
    """Predictions in many requests (so both workers serve some), then corrections."""
    base, _ = served
    texts = [text for text, _ in toy_samples(60, seed=7)]
    served_labels, answers = Tally(), []
    for start in range(0, len(texts), 3):
        response = httpx.post(f"{base}/predict", json={"texts": texts[start : start + 3]})
        assert response.status_code == 200, response.text
        answers += response.json()
    served_labels.update(answer["label"] for answer in answers)
    # 10 confirmations and 10 corrections by prediction_id, 5 new texts by an importer.
    agree = [{"prediction_id": a["prediction_id"], "label": a["label"]} for a in answers[:10]]
    disagree = [
        {"prediction_id": a["prediction_id"], "label": other_label(a["label"]), "source": "agent"}
        for a in answers[10:20]
    ]
    imported = [
        {"text": text, "label": label, "source": "import"}
        for text, label in toy_samples(5, seed=99)
        if text not in texts
    ]
    for samples in (agree, disagree, imported, agree):  # the replayed batch is not new
        response = httpx.post(f"{base}/feedback", json={"samples": samples})
        assert response.status_code == 200, response.text
    return {"answers": answers, "by_label": served_labels, "imported": len(imported)}


def other_label(label: str) -> str:
    return next(name for name in TOY_LABELS if name != label)


def pids(samples: dict, name: str) -> set[str]:
    return {dict(key)["pid"] for (n, key) in samples if n == name}


@pytest.mark.integration
def test_known_series_exist_at_zero_right_after_start(served):
    """Before any run or correction (this test runs first): rate() and increase() see a
    series' first increment only if the series was scraped before it."""
    base, _ = served
    runs = "livetune_training_runs_total"
    wait_until(lambda: any(name == runs for name, _ in scrape(base)))  # the Trainer is up

    def check(samples):
        for outcome in (outcome.value for outcome in metrics.OUTCOMES):
            for name in (runs, "livetune_training_duration_seconds_count"):
                assert samples.get((name, (("outcome", outcome),))) == 0, (name, outcome)
        for agreed in metrics.AGREEMENT:
            key = (("agreed", agreed), ("source", "unspecified"))
            assert samples.get(("livetune_feedback_samples_total", key)) == 0, agreed
        # The Trainer process has the per-worker gauges too, but no adapter: the per-worker
        # panels keep the pids that serve one, as the API workers do.
        workers = pids(samples, "livetune_adapter_info")
        assert len(workers) == WORKERS
        for name in ("livetune_requests_in_flight", "livetune_label_set_version"):
            assert len(pids(samples, name) & workers) == WORKERS

    scrapes_agree(base, check)


@pytest.mark.integration
def test_predictions_add_up_across_workers(served, traffic):
    base, _ = served
    answers = traffic["answers"]

    def check(samples):
        assert total(samples, "livetune_predictions_total") == len(answers)
        for label, count in traffic["by_label"].items():
            assert (
                value(samples, "livetune_predictions_total", label=label, adapter="base") == count
            )
        assert value(samples, "livetune_prediction_confidence_count") == len(answers)
        scores = sum(answer["score"] for answer in answers)
        assert math.isclose(
            value(samples, "livetune_prediction_confidence_sum"), scores, rel_tol=1e-6
        )
        assert len(serving_pids(samples, "base")) == WORKERS  # both workers are in every scrape

    scrapes_agree(base, check)


@pytest.mark.integration
def test_feedback_by_source_and_agreement_and_online_accuracy(served, traffic):
    base, _ = served

    def check(samples):
        feedback = "livetune_feedback_samples_total"
        assert value(samples, feedback, source="unspecified", agreed="true") == 10
        assert value(samples, feedback, source="agent", agreed="false") == 10
        assert value(samples, feedback, source="import", agreed="unknown") == traffic["imported"]
        assert total(samples, feedback) == 20 + traffic["imported"]
        assert value(samples, "livetune_online_accuracy_samples") == 20
        assert value(samples, "livetune_online_accuracy") == pytest.approx(0.5)
        assert value(samples, "livetune_feedback_pending_samples") == 20 + traffic["imported"]

    scrapes_agree(base, check)


@pytest.mark.integration
def test_a_training_run_and_the_swaps_it_causes(served, traffic):
    base, data_dir = served
    corrections = [{"text": t, "label": y, "source": "import"} for t, y in toy_samples(240)]
    response = httpx.post(f"{base}/feedback", json={"samples": corrections})
    assert response.status_code == 200, response.text
    assert httpx.post(f"{base}/train").status_code == 202
    registry = LocalRegistry(data_dir / "adapters")
    version = wait_until(registry.current, timeout=240)
    store = SQLiteFeedbackStore(data_dir)
    run = store.last_run()
    store.close()
    assert run.state == "promoted", run.reason
    gate = run.report["gate"]
    wait_until(lambda: len(serving_pids(scrape(base), version)) == WORKERS)

    def check(samples):
        assert value(samples, "livetune_training_runs_total", outcome="promoted") == 1
        assert total(samples, "livetune_training_runs_total") == 1
        assert value(samples, "livetune_training_duration_seconds_count", outcome="promoted") == 1
        assert value(samples, "livetune_training_last_promotion_timestamp_seconds") == (
            pytest.approx(run.finished_at)
        )
        accuracy = "livetune_training_validation_accuracy"
        assert value(samples, accuracy, model="candidate") == gate["candidate_accuracy"]
        assert value(samples, accuracy, model="in_service") == gate["current_accuracy"]
        assert value(samples, "livetune_training_in_progress") == 0
        assert value(samples, "livetune_feedback_pending_samples") == 0
        assert value(samples, "livetune_adapter_swaps_total") == WORKERS  # base -> version
        assert value(samples, "livetune_adapter_swap_duration_seconds_count") == WORKERS
        assert serving_pids(samples, "base") == set()

    scrapes_agree(base, check)


@pytest.mark.integration
def test_a_version_that_fails_to_load_is_counted_once_per_worker(served, tiny_model_dir):
    base, data_dir = served
    registry = LocalRegistry(data_dir / "adapters")
    serving = registry.current()
    # A damaged version made CURRENT behind the API's back (the API would refuse it).
    bad = publish_adapter(registry, tiny_model_dir, seed=1)
    (registry.root / bad / "head.safetensors").write_bytes(b"not safetensors")
    before = scrape(base)
    registry.activate(bad)
    failures = "livetune_adapter_swap_failures_total"
    expected = value(before, failures) + WORKERS
    wait_until(lambda: value(scrape(base), failures) == expected)

    def check(samples):
        assert value(samples, failures) == expected  # once per worker, not once per poll
        assert len(serving_pids(samples, serving or "base")) == WORKERS
        assert serving_pids(samples, bad) == set()
        swaps = "livetune_adapter_swaps_total"
        assert value(samples, swaps) == value(before, swaps)

    scrapes_agree(base, check)


def test_feedback_sources_are_bounded():
    sources = metrics.FeedbackSources(limit=2)
    assert [sources.label(s) for s in ("agent", None, "tool", "agent")] == [
        "agent",
        "unspecified",
        "other",
        "agent",
    ]


def gauge(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_store_gauges_are_read_from_the_store(tmp_path):
    store = SQLiteFeedbackStore(tmp_path)
    linked = [
        NewSample(f"t{i}", "a", prediction_id=f"p{i}", predicted_label="ab"[i % 2])
        for i in range(4)
    ]
    store.add_samples(linked)
    run_id = store.start_run(
        trigger="manual", parent="base", data_cursor=2, train_samples=2, validation_samples=0
    )
    gate = {"current_accuracy": 0.25, "candidate_accuracy": 0.75}
    store.finish_run(run_id, state="promoted", reason="", candidate="v1", report={"gate": gate})
    store.start_run(
        trigger="samples", parent="v1", data_cursor=4, train_samples=4, validation_samples=0
    )
    store_metrics.refresh_from_store(store, online_window=3)
    promoted = store.runs(states=("promoted",))[0]
    oldest_pending = store.oldest_sample_time(after_id=2)
    store.close()
    assert gauge("livetune_feedback_pending_samples") == 2  # after the promoted run's cursor
    assert gauge("livetune_feedback_oldest_pending_timestamp_seconds") == oldest_pending > 0
    assert gauge("livetune_feedback_stored_samples") == 4
    assert gauge("livetune_online_accuracy_samples") == 3
    assert gauge("livetune_online_accuracy") == pytest.approx(1 / 3)  # t3:b, t2:a, t1:b
    assert gauge("livetune_training_last_promotion_timestamp_seconds") == promoted.finished_at
    assert gauge("livetune_training_in_progress") == 1
    assert gauge("livetune_training_validation_accuracy", model="candidate") == 0.75
    assert gauge("livetune_training_validation_accuracy", model="in_service") == 0.25
