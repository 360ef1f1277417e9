"""GET /review on the real `bentoml serve`: the least certain predictions first, labeled
texts never again, leases between reviewers, the label filter, re-scoring under the
adapter in service, its metrics, and bad queries refused naming the parameter."""

from __future__ import annotations

import itertools
import re
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from benchmarks.harness.server import wait_until
from tests.conftest import TOY_WORDS
from tests.factories import TOY_LABELS, publish_adapter, tiny_server
from training.registry import LocalRegistry
from training.store import PostgresStore, SQLiteFeedbackStore

pytestmark = pytest.mark.integration

# Three words each: no two share more than two, so none is a near-duplicate of another.
TEXTS = [" ".join(words) for words in itertools.combinations(TOY_WORDS[:9], 3)]


def serve(tmp_path, model_dir, **env: str):
    defaults = {"LIVETUNE_REVIEW_STRATEGY": "margin", "LIVETUNE_REVIEW_RANDOM_SHARE": "0"}
    return tiny_server(tmp_path, model_dir, LIVETUNE_ACCESS_LOG="false", **{**defaults, **env})


def predict(server, texts: list[str], store=None) -> list[dict]:
    """Predictions of `texts` (4 a call), once the prediction log (in `store`, or the
    server's SQLite files) remembers every one: it is written off the request path."""
    answers = []
    for start in range(0, len(texts), 4):
        body = {"texts": texts[start : start + 4]}
        answers += httpx.post(f"{server.base}/predict", json=body, timeout=30).json()
    store = store or SQLiteFeedbackStore(server.data_dir)
    try:
        ids = [a["prediction_id"] for a in answers]
        wait_until(lambda: len(store.get_predictions(ids)) == len(ids), timeout=30)
    finally:
        store.close()
    return answers


def margin(answer: dict) -> float:
    scores = [t["score"] for t in answer["top"]]
    return scores[0] - scores[1]


def review(server, **params) -> httpx.Response:
    return httpx.get(f"{server.base}/review", params=params, timeout=60)


def items(server, **params) -> list[dict]:
    response = review(server, **params)
    assert response.status_code == 200, response.text
    return response.json()["items"]


def serving(server) -> set[str]:
    """The adapters the workers serve, from their heartbeats."""
    return {w["adapter"] for w in httpx.get(f"{server.base}/status", timeout=30).json()["workers"]}


def metric(server, name: str) -> float:
    text = httpx.get(f"{server.base}/metrics", timeout=30).text
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, flags=re.M)
    assert match, f"{name} is not exported"
    return float(match.group(1))


def test_the_least_certain_predictions_come_first(tmp_path, tiny_model_dir):
    with serve(tmp_path, tiny_model_dir) as server:
        answers = predict(server, TEXTS[:12])
        first = items(server, limit=4, source="ann")
        least_certain = sorted(answers, key=margin)[:4]
        assert [i["prediction_id"] for i in first] == [a["prediction_id"] for a in least_certain]
        by_id = {a["prediction_id"]: a for a in answers}
        for item in first:
            served = by_id[item["prediction_id"]]
            assert item["text"] == TEXTS[answers.index(served)]
            assert item["adapter"] == "base" and item["served_at"] > 0
            assert [t["label"] for t in item["top"]] == [t["label"] for t in served["top"]]
            assert item["top"][0]["score"] == pytest.approx(served["top"][0]["score"], abs=1e-4)
        # The queue's metrics: what it handed out, what is left, where labels came from.
        sample = {"prediction_id": first[0]["prediction_id"], "label": "refund_request"}
        other = {"text": TEXTS[20], "label": "lost_card"}
        feedback = httpx.post(f"{server.base}/feedback", json={"samples": [sample, other]})
        assert feedback.status_code == 200, feedback.text
        assert metric(server, "livetune_review_items_served_total") == 4
        assert metric(server, "livetune_review_queue_depth") == 8  # 12 served, 4 leased
        assert metric(server, 'livetune_review_labeled_samples{via="queue"}') == 1
        assert metric(server, 'livetune_review_labeled_samples{via="elsewhere"}') == 1


def test_corrected_predictions_and_labeled_texts_never_come_back(tmp_path, tiny_model_dir):
    with serve(tmp_path, tiny_model_dir) as server:
        answers = predict(server, TEXTS[:10])
        by_id = [{"prediction_id": a["prediction_id"], "label": "lost_card"} for a in answers[:2]]
        by_text = [{"text": text, "label": "exchange_rate"} for text in TEXTS[2:4]]
        response = httpx.post(f"{server.base}/feedback", json={"samples": by_id + by_text})
        assert response.status_code == 200, response.text
        again = predict(server, [TEXTS[0].upper(), TEXTS[3]])  # labeled texts, served anew
        handed = items(server, limit=100, source="ann")
        assert sorted(i["text"] for i in handed) == sorted(TEXTS[4:10])
        labeled = {a["prediction_id"] for a in answers[:4] + again}
        assert labeled.isdisjoint(i["prediction_id"] for i in handed)
        # Every open text is now leased to ann: nobody is handed one again meanwhile.
        assert items(server, limit=100, source="bob") == []


def test_leases_keep_two_concurrent_reviewers_apart(tmp_path, tiny_model_dir):
    with serve(
        tmp_path, tiny_model_dir, LIVETUNE_WORKERS="2", LIVETUNE_REVIEW_LEASE_S="3"
    ) as server:
        predict(server, TEXTS[:20])
        with ThreadPoolExecutor(4) as pool:
            batches = list(pool.map(lambda who: items(server, limit=10, source=who),
                                    ["ann", "bob", "cid", "dee"]))  # fmt: skip
        handed = [i["prediction_id"] for batch in batches for i in batch]
        assert len(handed) == 20 and len(set(handed)) == 20  # each to one reviewer only
        assert items(server, limit=10, source="eve") == []
        # Unlabeled items go back to the queue once their lease expires.
        back = wait_until(lambda: items(server, limit=100, source="eve"), timeout=60)
        assert {i["prediction_id"] for i in back} <= set(handed) and back


def test_the_label_filter_and_bad_queries(tmp_path, tiny_model_dir):
    with serve(tmp_path, tiny_model_dir) as server:
        answers = predict(server, TEXTS[:16])
        counts = {label: [a["label"] for a in answers].count(label) for label in TOY_LABELS}
        label = max(counts, key=counts.get)
        filtered = items(server, limit=100, label=label)
        assert {i["prediction_id"] for i in filtered} == {
            a["prediction_id"] for a in answers if a["label"] == label
        }
        assert all(i["top"][0]["label"] == label for i in filtered)
        for params, loc, kind in [
            ({"limit": "0"}, ["query", "limit"], "greater_than_equal"),
            ({"limit": "101"}, ["query", "limit"], "less_than_equal"),
            ({"limit": "ten"}, ["query", "limit"], "int_parsing"),
            ({"limit": ""}, ["query", "limit"], "int_parsing"),
            ({"label": "no_such_label"}, ["query", "label"], "unknown_label"),
            ({"source": "x" * 129}, ["query", "source"], "string_too_long"),
            ({"colour": "red"}, ["query", "colour"], "extra_forbidden"),
        ]:
            response = review(server, **params)
            assert response.status_code == 400, (params, response.text)
            [detail] = response.json()["detail"]
            assert (detail["loc"], detail["type"]) == (loc, kind), params


def test_the_queue_is_ranked_under_the_adapter_in_service(tmp_path, tiny_model_dir):
    with serve(tmp_path, tiny_model_dir) as server:
        answers = predict(server, TEXTS[:12])
        version = publish_adapter(LocalRegistry(server.data_dir / "adapters"), tiny_model_dir, 7)
        response = httpx.post(f"{server.base}/adapters/activate", json={"version": version})
        assert response.status_code == 200, response.text
        wait_until(lambda: serving(server) == {version}, timeout=60)
        handed = items(server, limit=12, source="ann")
        assert {i["adapter"] for i in handed} == {version}
        now = {i["prediction_id"]: i["top"] for i in handed}
        served = {a["prediction_id"]: a["top"] for a in answers}
        assert set(now) == set(served) and now != served  # re-scored, not the served scores
        assert [i["prediction_id"] for i in handed] == sorted(
            now, key=lambda p: margin({"top": now[p]})
        )


def test_coverage_ranks_a_bounded_sample_under_the_adapter_in_service(tmp_path, tiny_model_dir):
    env = {"LIVETUNE_REVIEW_STRATEGY": "coverage", "LIVETUNE_REVIEW_RESCORE": "6"}
    with serve(tmp_path, tiny_model_dir, **env) as server:
        answers = predict(server, TEXTS[:12])
        first = items(server, limit=5, source="ann")
        assert len(first) == 5 and {i["adapter"] for i in first} == {"base"}
        second = items(server, limit=5, source="bob")  # a sample of 6 of the 7 still open
        assert second and {i["text"] for i in first}.isdisjoint(i["text"] for i in second)
        version = publish_adapter(LocalRegistry(server.data_dir / "adapters"), tiny_model_dir, 7)
        response = httpx.post(f"{server.base}/adapters/activate", json={"version": version})
        assert response.status_code == 200, response.text
        wait_until(lambda: serving(server) == {version}, timeout=60)
        third = items(server, limit=5, source="cid")  # after a swap: re-scored, re-embedded
        assert third and {i["adapter"] for i in third} == {version}
        handed = [i["prediction_id"] for i in first + second + third]
        assert len(set(handed)) == len(handed) <= len(answers)


def test_on_postgresql_and_through_an_outage(tmp_path, tiny_model_dir, postgres_server):
    url = postgres_server.fresh_url()
    with serve(tmp_path, tiny_model_dir, LIVETUNE_STORE_URL=url) as server:
        answers = predict(server, TEXTS[:6], PostgresStore(url))
        handed = items(server, limit=3, source="ann")
        assert [i["prediction_id"] for i in handed] == [
            a["prediction_id"] for a in sorted(answers, key=margin)[:3]
        ]
        postgres_server.stop("immediate")
        try:
            refused = review(server, limit=3, source="bob")
            assert refused.status_code == 503, refused.text
            assert refused.json()["detail"][0]["type"] == "store_unavailable"
        finally:
            postgres_server.start()
        back = wait_until(lambda: review(server, limit=3, source="bob").status_code == 200)
        assert back  # recovers without a restart; ann's three stay leased to her
        assert {i["prediction_id"] for i in items(server, limit=10, source="cid")}.isdisjoint(
            i["prediction_id"] for i in handed
        )
