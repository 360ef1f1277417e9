"""Batching with a bounded wait (service/batching.py): on the Batcher itself with a real
event loop and a real model thread, then on a real server with the tiny model."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from benchmarks.harness.server import running_server
from service.batching import Batcher, Overloaded
from tests.factories import TEXTS, TOY_LABELS, publish_adapter, tiny_training_env, zero_shot
from training.adapters import attach_lora, load_head
from training.registry import LocalRegistry
from training.trainer import TrainConfig


class Model:
    """Echoes each text with the number of the batch it ran in; sleeps like a forward."""

    def __init__(self, seconds: float = 0.02):
        self.seconds, self.batches = seconds, []

    def __call__(self, texts: list[str]):
        time.sleep(self.seconds)
        self.batches.append(list(texts))
        return [(text, len(self.batches)) for text in texts], len(self.batches)


def run(coroutine):
    return asyncio.run(coroutine)


def test_concurrent_requests_of_different_sizes_get_their_own_answers_in_order():
    model = Model()
    batcher = Batcher(model, max_rows=16, max_delay_s=0.005, max_queued_rows=1_000)
    requests = [[f"r{i} t{j}" for j in range(1 + i % 5)] for i in range(40)]

    async def main():
        return await asyncio.gather(*(batcher.submit(texts) for texts in requests))

    results = run(main())
    for texts, (answers, batch) in zip(requests, results):
        assert [text for text, _ in answers] == texts  # its own, in its order
        assert {b for _, b in answers} == {batch}  # one batch served the whole request
    assert max(len(b) for b in model.batches) <= 16
    assert len(model.batches) < len(requests)  # they were batched together
    batcher.close()


def test_a_request_that_finds_the_model_idle_does_not_wait_for_company():
    delays = []
    model = Model(seconds=0.01)
    batcher = Batcher(model, max_rows=64, max_delay_s=0.5, max_queued_rows=1_000)

    async def main():
        await asyncio.gather(*(batcher.submit([f"burst {i}"]) for i in range(30)))  # a burst
        await asyncio.sleep(0.05)
        return await batcher.submit(["alone"])

    import service.batching

    original = service.batching.metrics.record_queue_delay
    service.batching.metrics.record_queue_delay = lambda s: (delays.append(s), original(s))
    try:
        answers, _ = run(main())
    finally:
        service.batching.metrics.record_queue_delay = original
    assert answers == [("alone", len(model.batches))]
    assert delays[-1] < 0.05  # recorded delay: nowhere near the 0.5 s it could have waited
    assert max(delays[:-1]) < 0.5 + 0.1  # the burst waited at most a batch plus the delay
    batcher.close()


def test_while_the_model_is_busy_a_batch_leaves_full_or_after_the_delay():
    model = Model(seconds=0.05)
    batcher = Batcher(model, max_rows=4, max_delay_s=0.02, max_queued_rows=1_000)

    async def main():
        first = asyncio.ensure_future(batcher.submit(["first"]))
        await asyncio.sleep(0.01)  # "first" is running: the rest queue
        rest = [asyncio.ensure_future(batcher.submit([f"q{i}"])) for i in range(6)]
        await asyncio.gather(first, *rest)

    run(main())
    assert model.batches[0] == ["first"]
    assert model.batches[1] == ["q0", "q1", "q2", "q3"]  # full: left at once
    assert model.batches[2] == ["q4", "q5"]
    batcher.close()


def test_past_the_queue_bound_a_request_is_refused_at_once():
    batcher = Batcher(Model(seconds=0.1), max_rows=2, max_delay_s=0.0, max_queued_rows=4)

    async def main():
        running = asyncio.ensure_future(batcher.submit(["a", "b"]))
        await asyncio.sleep(0.01)
        queued = asyncio.ensure_future(batcher.submit(["c", "d", "e"]))
        await asyncio.sleep(0)
        with pytest.raises(Overloaded, match="queued"):
            await batcher.submit(["f", "g"])
        return await asyncio.gather(running, queued)

    (first, _), (second, _) = run(main())
    assert [t for t, _ in first] == ["a", "b"] and [t for t, _ in second] == ["c", "d", "e"]
    batcher.close()


def test_an_error_in_the_model_reaches_every_request_of_its_batch_and_no_other():
    calls = []

    def model(texts):
        calls.append(texts)
        if "bad" in texts:
            raise RuntimeError("boom")
        time.sleep(0.02)
        return list(texts), None

    batcher = Batcher(model, max_rows=8, max_delay_s=0.0, max_queued_rows=100)

    async def main():
        first = asyncio.ensure_future(batcher.submit(["ok"]))
        await asyncio.sleep(0.005)
        bad = [asyncio.ensure_future(batcher.submit([t])) for t in ("x", "bad")]
        results = await asyncio.gather(*bad, return_exceptions=True)
        return await first, results, await batcher.submit(["after"])

    first, results, after = run(main())
    assert first == (["ok"], None) and after == (["after"], None)
    assert all(isinstance(r, RuntimeError) for r in results)
    batcher.close()


# On a real server.


def histogram(metrics: str, name: str) -> dict[str, float]:
    """{le: cumulative count} of a histogram, summed over the workers' series."""
    counts: dict[str, float] = {}
    for le, value in re.findall(rf'^{name}_bucket{{.*?le="([^"]+)".*?}} (\S+)$', metrics, re.M):
        counts[le] = counts.get(le, 0.0) + float(value)
    return counts


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("batching")
    env = {
        **tiny_training_env(tiny_model_dir),
        "LIVETUNE_TRAINER": "false",
        "LIVETUNE_MAX_QUEUE_DELAY_MS": "50",
        "LIVETUNE_WORKERS": "1",
        "LIVETUNE_PRECISION": "fp32",
    }  # fp32: the same scores in a batch of any size
    with running_server(tmp, **env) as served:
        yield served


@pytest.fixture(scope="module")
def registry(server):
    return LocalRegistry(server.data_dir / "adapters")


@pytest.mark.integration
def test_mixed_sizes_over_http_each_get_their_own_answers(server):
    texts = [f"{a} {b}" for a in ("my card", "the rate", "refund please", "hello") for b in
             ("lost", "euro", "money back", "world", "i want to know")]  # fmt: skip
    requests = [texts[i : i + 1 + i % 7] for i in range(0, len(texts), 2)] * 3
    alone = {t: httpx.post(f"{server.base}/predict", json={"texts": [t]}).json()[0] for t in texts}

    def ask(batch):
        return batch, httpx.post(f"{server.base}/predict", json={"texts": batch}, timeout=60)

    with ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(ask, requests))
    for batch, response in results:
        assert response.status_code == 200, response.text
        answers = response.json()
        assert len(answers) == len(batch)
        for text, answer in zip(batch, answers):
            assert answer["label"] == alone[text]["label"]
            assert answer["score"] == pytest.approx(alone[text]["score"], abs=1e-4)
    batches = histogram(httpx.get(f"{server.base}/metrics").text, "livetune_batch_size_texts")
    assert batches["+Inf"] < sum(len(b) for b in requests)  # some texts shared a batch


@pytest.mark.integration
def test_no_request_mixes_adapter_versions_across_swaps(server, registry, tiny_model_dir):
    versions = [publish_adapter(registry, tiny_model_dir, seed=s) for s in (11, 12)]
    reference = {}
    for version in versions:
        predictor = zero_shot(tiny_model_dir)
        folder = registry.materialize(version)
        attach_lora(predictor.model, TrainConfig(), warm_start=folder)
        load_head(predictor.model, TOY_LABELS, folder)
        predictor.model.eval()
        reference[version] = predictor.probabilities(TEXTS)
    reference["base"] = zero_shot(tiny_model_dir).probabilities(TEXTS)
    names = list(TOY_LABELS)
    stop, seen, errors = threading.Event(), [], []

    def load():
        with httpx.Client(base_url=server.base, timeout=60) as client:
            while not stop.is_set():
                response = client.post("/predict", json={"texts": TEXTS})
                if response.status_code != 200:
                    errors.append(response.text)
                    continue
                seen.append(response.json())

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        for i in range(6):
            registry.activate(versions[i % 2])
            time.sleep(0.7)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        registry.deactivate()
    assert errors == []
    assert {answers[0]["adapter"] for answers in seen} >= set(versions)
    for answers in seen:
        [version] = {a["adapter"] for a in answers}  # one version per request (its batch)
        expected = reference[version]
        for row, answer in zip(expected, answers):
            assert answer["label"] == names[int(row.argmax())]
            assert answer["score"] == pytest.approx(float(row.max()), abs=1e-4)


@pytest.mark.integration
def test_a_lone_request_after_a_burst_is_dispatched_without_waiting(server):
    body = {"texts": ["my card is lost"]}
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda _: httpx.post(f"{server.base}/predict", json=body, timeout=60),
                      range(200)))  # fmt: skip
    time.sleep(0.5)
    before = histogram(
        httpx.get(f"{server.base}/metrics").text, "livetune_batch_queue_delay_seconds"
    )
    assert httpx.post(f"{server.base}/predict", json=body).status_code == 200
    after = histogram(
        httpx.get(f"{server.base}/metrics").text, "livetune_batch_queue_delay_seconds"
    )
    assert after["+Inf"] == before["+Inf"] + 1
    # Recorded in the queue: under 5 ms, where waiting for company would be the 50 ms set.
    assert after["0.005"] == before["0.005"] + 1
    # The burst did queue: some of it waited for a batch in progress.
    assert before["+Inf"] > before["0.0005"]


def test_the_model_runs_in_a_thread_of_its_own():
    # Not on the event loop's thread: that one keeps taking requests meanwhile.
    ran_in = []
    batcher = Batcher(
        lambda texts: (ran_in.append(threading.current_thread().name) or list(texts), None),
        max_rows=4, max_delay_s=0.0, max_queued_rows=10,
    )  # fmt: skip
    run(batcher.submit(["x"]))
    assert ran_in[0].startswith("livetune-model") and ran_in[0] != threading.current_thread().name
    batcher.close()
