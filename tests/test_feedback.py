"""POST /feedback through the service's ASGI app, checked against the real SQLite file."""

from __future__ import annotations

import sqlite3

import pytest

from tests.conftest import TOY_LABELS


def stored_rows(client) -> list[tuple]:
    db = sqlite3.connect(client.data_dir / "feedback.sqlite3")
    try:
        return db.execute(
            "SELECT id, text, label, source, client_id, prediction_id, predicted_label, adapter,"
            " superseded_by FROM samples ORDER BY id"
        ).fetchall()
    finally:
        db.close()


def post(client, *samples):
    return client.post("/feedback", json={"samples": list(samples)})


def test_feedback_by_text_is_stored(client):
    response = post(client, {"text": "card gone", "label": "lost_card", "source": "agent-1"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["stored"] == 1 and body["duplicates"] == 0
    row = next(r for r in stored_rows(client) if r[0] == body["ids"][0])
    assert row[1:5] == ("card gone", "lost_card", "agent-1", None)


def test_feedback_by_prediction_id_records_what_was_served(client):
    [served] = client.post("/predict", json={"texts": ["how much is a euro"]}).json()
    response = post(client, {"prediction_id": served["prediction_id"], "label": "exchange_rate"})
    assert response.status_code == 200, response.text
    row = next(r for r in stored_rows(client) if r[0] == response.json()["ids"][0])
    assert row[1] == "how much is a euro"
    assert row[5:8] == (served["prediction_id"], served["label"], "base")


def test_feedback_by_text_finds_the_served_prediction(client):
    [served] = client.post("/predict", json={"texts": ["refund my money please"]}).json()
    response = post(client, {"text": "Refund my money  please", "label": "refund_request"})
    row = next(r for r in stored_rows(client) if r[0] == response.json()["ids"][0])
    assert row[6:8] == (served["label"], "base")


def test_replay_with_the_same_id_does_not_duplicate(client):
    sample = {"text": "stolen card", "label": "lost_card", "id": "client-key-1"}
    first = post(client, sample).json()
    again = post(client, sample).json()
    assert again == {"ids": first["ids"], "stored": 0, "duplicates": 1}
    assert sum(1 for r in stored_rows(client) if r[4] == "client-key-1") == 1


def test_a_new_label_for_the_same_text_supersedes_the_old(client):
    [old] = post(client, {"text": "money back", "label": "exchange_rate"}).json()["ids"]
    [new] = post(client, {"text": "money back", "label": "refund_request"}).json()["ids"]
    rows = {r[0]: r for r in stored_rows(client)}
    assert rows[old][8] == new and rows[new][8] is None


BAD_BATCHES = [
    ("unknown label", [{"text": "x", "label": "nope"}], ["samples", 0, "label"], "unknown_label"),
    (
        "unknown prediction id",
        [{"prediction_id": "doesnotexist", "label": "lost_card"}],
        ["samples", 0, "prediction_id"],
        "unknown_prediction_id",
    ),
    (
        "empty text",
        [{"text": "", "label": "lost_card"}],
        ["samples", 0, "text"],
        "string_too_short",
    ),
    ("blank text", [{"text": "  ", "label": "lost_card"}], ["samples", 0, "text"], "value_error"),
    (
        "too long",
        [{"text": "x" * 51, "label": "lost_card"}],
        ["samples", 0, "text"],
        "string_too_long",
    ),
    ("no text nor id", [{"label": "lost_card"}], ["samples", 0], "value_error"),
    (
        "both text and id",
        [{"text": "a", "prediction_id": "p", "label": "lost_card"}],
        ["samples", 0],
        "value_error",
    ),
    ("missing label", [{"text": "a"}], ["samples", 0, "label"], "missing"),
    (
        "unknown field",
        [{"text": "a", "label": "lost_card", "lable": "x"}],
        ["samples", 0, "lable"],
        "extra_forbidden",
    ),
    (
        "too many",
        [{"text": f"t{i}", "label": "lost_card"} for i in range(6)],
        ["samples"],
        "too_long",
    ),
    ("empty batch", [], ["samples"], "too_short"),
    # PostgreSQL text cannot hold U+0000: refused on every backend, by field.
    (
        "NUL in text",
        [{"text": "a\x00b", "label": "lost_card"}],
        ["samples", 0, "text"],
        "value_error",
    ),
    ("NUL in label", [{"text": "a", "label": "lost\x00"}], ["samples", 0, "label"], "value_error"),
    (
        "NUL in source",
        [{"text": "a", "label": "lost_card", "source": "\x00"}],
        ["samples", 0, "source"],
        "value_error",
    ),
    (
        "NUL in id",
        [{"text": "a", "label": "lost_card", "id": "k\x00"}],
        ["samples", 0, "id"],
        "value_error",
    ),
    ("label not a string", [{"text": "a", "label": 3}], ["samples", 0, "label"], "string_type"),
]


@pytest.mark.parametrize(
    ("case", "samples", "loc", "kind"), BAD_BATCHES, ids=[b[0] for b in BAD_BATCHES]
)
def test_bad_samples_are_a_400_and_nothing_is_stored(client, case, samples, loc, kind):
    before = stored_rows(client)
    response = client.post("/feedback", json={"samples": samples})
    assert response.status_code == 400, response.text
    errors = response.json()["detail"]
    assert [(e["loc"], e["type"]) for e in errors] == [(loc, kind)]
    assert stored_rows(client) == before


def test_every_bad_item_is_listed_by_index_and_the_batch_is_refused_whole(client):
    before = stored_rows(client)
    samples = [
        {"text": "fine sample", "label": "lost_card"},
        {"text": "wrong label", "label": "lost_kard"},
        {"prediction_id": "expired-or-never-was", "label": "lost_card"},
        {"text": "another wrong", "label": "LOST_CARD"},
    ]
    response = post(client, *samples)
    assert response.status_code == 400
    errors = response.json()["detail"]
    assert [e["loc"] for e in errors] == [
        ["samples", 1, "label"],
        ["samples", 2, "prediction_id"],
        ["samples", 3, "label"],
    ]
    assert errors[0]["valid_labels"] == TOY_LABELS
    assert all(name in errors[0]["msg"] for name in TOY_LABELS)
    assert stored_rows(client) == before


def test_feedback_missing_samples_field_is_a_400(client):
    response = client.post("/feedback", json={"texts": ["a"]})
    assert response.status_code == 400
    assert response.json()["detail"][0]["loc"] == ["samples"]


def test_a_store_that_is_down_is_a_503_and_nothing_is_acknowledged(client, monkeypatch):
    """The in-process store is SQLite, which has no outage to stage: its write is made to
    fail as PostgreSQL's does when the server is down (tests/test_scaleout.py stops a
    real one)."""
    import bentoml

    from training.store import StoreUnavailable

    live = bentoml.get_current_service()

    def down(samples):
        raise StoreUnavailable("cannot reach postgresql://127.0.0.1:1/livetune")

    monkeypatch.setattr(live.store, "add_samples", down)
    before = stored_rows(client)
    response = post(client, {"text": "card gone again", "label": "lost_card"})
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["detail"][0]["loc"] == ["store"]
    assert body["detail"][0]["type"] == "store_unavailable"
    assert "unavailable" in body["error"] and "ids" not in body
    assert stored_rows(client) == before
