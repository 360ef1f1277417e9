"""Acknowledged corrections survive kill -9 and concurrent writers, on the real server."""

from __future__ import annotations

import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from benchmarks.harness.server import kill_server, start_server, stop_server, wait_for
from tests.conftest import TOY_LABELS

pytestmark = pytest.mark.integration


def tiny_server(tmp_path, tiny_model_dir, workers: int = 2):
    process, base = start_server(
        tmp_path,
        LIVETUNE_BASE_MODEL=str(tiny_model_dir),
        LIVETUNE_LABELS=",".join(TOY_LABELS),
        LIVETUNE_WORKERS=str(workers),
    )
    wait_for(f"{base}/readyz", process)
    return process, base


def stream_feedback(base: str, acknowledged: dict, stop: threading.Event) -> None:
    """One sample per call until the server goes away; record what was acknowledged."""
    with httpx.Client(timeout=10) as client:
        for i in range(5_000):
            if stop.is_set():
                return
            sample = {"text": f"streamed sample {i}", "label": TOY_LABELS[i % 3], "id": f"s-{i}"}
            try:
                response = client.post(f"{base}/feedback", json={"samples": [sample]})
            except httpx.TransportError:
                return
            if response.status_code == 200:
                acknowledged[response.json()["ids"][0]] = sample


def test_acknowledged_feedback_survives_kill_9(tmp_path, tiny_model_dir):
    process, base = tiny_server(tmp_path, tiny_model_dir)
    acknowledged: dict[int, dict] = {}
    stop = threading.Event()
    writer = threading.Thread(target=stream_feedback, args=(base, acknowledged, stop))
    writer.start()
    try:
        deadline = time.monotonic() + 60
        while len(acknowledged) < 100 and time.monotonic() < deadline:
            time.sleep(0.05)
        kill_server(process)  # mid-stream: requests are in flight
    finally:
        stop.set()
        writer.join(30)
        stop_server(process)
    assert len(acknowledged) >= 100

    db = sqlite3.connect(tmp_path / "data" / "feedback.sqlite3")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    rows = {r[0]: r[1:] for r in db.execute("SELECT id, text, label, client_id FROM samples")}
    db.close()
    for sample_id, sample in acknowledged.items():
        assert rows[sample_id] == (sample["text"], sample["label"], sample["id"])
    assert all(text and label for text, label, _ in rows.values())

    process, base = tiny_server(tmp_path, tiny_model_dir)
    try:  # the restarted server knows every acknowledged sample: replays are duplicates
        replay = list(acknowledged.values())[:50]
        body = httpx.post(f"{base}/feedback", json={"samples": replay}, timeout=30).json()
        assert body["duplicates"] == len(replay)
    finally:
        stop_server(process)


def test_two_workers_writing_at_once_store_everything(tmp_path, tiny_model_dir):
    process, base = tiny_server(tmp_path, tiny_model_dir, workers=2)

    def send(batch: int) -> int:
        samples = [
            {"text": f"batch {batch} item {i}", "label": TOY_LABELS[i % 3]} for i in range(10)
        ]
        response = httpx.post(f"{base}/feedback", json={"samples": samples}, timeout=60)
        assert response.status_code == 200, response.text
        return response.json()["stored"]

    try:
        with ThreadPoolExecutor(max_workers=16) as pool:
            stored = sum(pool.map(send, range(200)))
    finally:
        stop_server(process)
    assert stored == 2_000
    db = sqlite3.connect(tmp_path / "data" / "feedback.sqlite3")
    assert db.execute("SELECT count(*) FROM samples").fetchone()[0] == 2_000
    db.close()


def test_feedback_by_id_right_after_predict_works_across_workers(tmp_path, tiny_model_dir):
    process, base = tiny_server(tmp_path, tiny_model_dir, workers=2)

    def predict_then_correct(i: int) -> int:
        with httpx.Client(base_url=base, timeout=60) as client:
            [served] = client.post("/predict", json={"texts": [f"my card {i}"]}).json()
            sample = {"prediction_id": served["prediction_id"], "label": "lost_card"}
            return client.post("/feedback", json={"samples": [sample]}).status_code

    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            statuses = list(pool.map(predict_then_correct, range(60)))
    finally:
        stop_server(process)
    assert statuses == [200] * 60
