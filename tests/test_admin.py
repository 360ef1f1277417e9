"""Hot-swap and the operator endpoints on the real `bentoml serve` with two workers."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from benchmarks.harness.server import running_server, wait_until
from tests.conftest import TOY_LABELS
from tests.factories import publish_adapter
from training.registry import LocalRegistry

pytestmark = pytest.mark.integration
CONVERGE_S = 2.0  # the promise: every worker serves a new CURRENT within this long


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model_dir):
    tmp_path = tmp_path_factory.mktemp("admin")
    with running_server(
        tmp_path,
        LIVETUNE_BASE_MODEL=str(tiny_model_dir),
        LIVETUNE_LABELS=",".join(TOY_LABELS),
        LIVETUNE_WORKERS="2",
        LIVETUNE_TRAINER="false",
        LIVETUNE_ACCESS_LOG="false",
    ) as server:
        yield server.base, LocalRegistry(server.data_dir / "adapters"), tiny_model_dir


def workers_on(base: str, version: str) -> bool:
    workers = httpx.get(f"{base}/status", timeout=10).json()["workers"]
    return len(workers) == 2 and all(w["adapter"] == version for w in workers)


def test_20_activations_under_load_fail_no_request(served):
    base, registry, model_dir = served
    versions = [publish_adapter(registry, model_dir, seed=s) for s in range(20)]
    history: list[tuple[float, str]] = [(0.0, "base")]  # (time CURRENT changed, version)
    answers: list[tuple[float, float, int, list[str]]] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                started = time.monotonic()
                response = client.post(f"{base}/predict", json={"texts": ["lost card", "rate"]})
                served_by = [p["adapter"] for p in response.json()] if response.is_success else []
                answers.append((started, time.monotonic(), response.status_code, served_by))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        for version in versions:
            asked = time.monotonic()  # CURRENT changes between this and the answer
            response = httpx.post(f"{base}/adapters/activate", json={"version": version})
            assert response.status_code == 200, response.text
            history.append((asked, version))
            time.sleep(0.3)
        wait_until(lambda: workers_on(base, versions[-1]), CONVERGE_S + 1)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert len(answers) > 100
    assert [a for a in answers if a[2] != 200] == []
    for started, ended, _, served_by in answers:
        assert len(set(served_by)) == 1, "one batch, one version"
        # CURRENT during the request, or within the convergence window before it.
        allowed = {
            version
            for i, (since, version) in enumerate(history)
            if since <= ended
            and (i + 1 == len(history) or history[i + 1][0] >= started - CONVERGE_S)
        }
        assert served_by[0] in allowed


def test_status_and_adapter_history(served):
    base, registry, _ = served
    status = httpx.get(f"{base}/status", timeout=10).json()
    assert status["labels"] == TOY_LABELS
    assert status["active_adapter"] == registry.current()
    assert {"pending_samples", "last_training_run", "base_model", "workers"} <= set(status)
    history = httpx.get(f"{base}/adapters", timeout=10).json()
    assert [h["version"] for h in history] == [v.version for v in reversed(registry.versions())]
    assert [h["version"] for h in history if h["active"]] == [registry.current()]
    assert {"parent", "created_at", "metrics", "train_samples"} <= set(history[0])


def test_rollback_to_base_and_refusals(served):
    base, registry, model_dir = served
    answer = httpx.post(f"{base}/adapters/activate", json={"version": "base"})
    assert answer.json() == {"active": "base"}
    wait_until(lambda: workers_on(base, "base"), CONVERGE_S + 1)
    unknown = httpx.post(f"{base}/adapters/activate", json={"version": "v9999-20990101T000000"})
    assert unknown.status_code == 404
    assert unknown.json()["detail"][0]["loc"] == ["version"]
    assert unknown.json()["detail"][0]["type"] == "unknown_version"
    traversal = httpx.post(f"{base}/adapters/activate", json={"version": "../../etc"})
    assert traversal.status_code == 400
    assert traversal.json()["detail"][0]["type"] == "invalid_version"
    assert registry.current() is None


def test_a_corrupt_adapter_keeps_the_previous_one_serving(served):
    base, registry, model_dir = served
    good = publish_adapter(registry, model_dir, seed=100)
    assert httpx.post(f"{base}/adapters/activate", json={"version": good}).status_code == 200
    wait_until(lambda: workers_on(base, good), CONVERGE_S + 1)
    bad = publish_adapter(registry, model_dir, seed=101)
    (registry.root / bad / "adapter_model.safetensors").write_bytes(b"\x00" * 64)
    assert httpx.post(f"{base}/adapters/activate", json={"version": bad}).status_code == 200
    time.sleep(CONVERGE_S)
    predictions = httpx.post(f"{base}/predict", json={"texts": ["lost card"]}, timeout=30)
    assert predictions.status_code == 200
    assert predictions.json()[0]["adapter"] == good
    workers = httpx.get(f"{base}/status", timeout=10).json()["workers"]
    assert all(w["adapter"] == good and w["failed_swaps"] == 1 for w in workers)
    assert all(bad in w["last_error"] for w in workers)
