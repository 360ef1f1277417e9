"""HTTP tests through the service's ASGI app (in-process, real BentoML app, tiny model)."""

from __future__ import annotations

import pytest

from tests.conftest import TOY_LABELS


def test_predict_answers_one_object_per_text(client):
    response = client.post("/predict", json={"texts": ["my card is lost", "refund please"]})
    assert response.status_code == 200
    body = response.json()
    assert len(body) == 2
    for item in body:
        assert item["label"] in TOY_LABELS
        assert 0 < item["score"] <= 1
        assert [t["label"] for t in item["top"]][0] == item["label"]
        assert len(item["top"]) == 2
        assert item["adapter"] == "base"
        assert len(item["prediction_id"]) == 32
    assert body[0]["prediction_id"] != body[1]["prediction_id"]


def test_probes(client):
    assert client.get("/livez").status_code == 200
    assert client.get("/readyz").status_code == 200


BAD_INPUTS = [
    ("missing texts", {}, ["texts"], "missing"),
    ("empty list", {"texts": []}, ["texts"], "too_short"),
    ("empty text", {"texts": [""]}, ["texts", 0], "string_too_short"),
    ("whitespace text", {"texts": ["ok", " \n\t"]}, ["texts", 1], "value_error"),
    ("too many texts", {"texts": ["a"] * 5}, ["texts"], "too_long"),
    ("too long text", {"texts": ["x" * 51]}, ["texts", 0], "string_too_long"),
    ("texts not a list", {"texts": "my card"}, ["texts"], "list_type"),
    ("text not a string", {"texts": [42]}, ["texts", 0], "string_type"),
    ("null text", {"texts": [None]}, ["texts", 0], "string_type"),
    ("body not an object", ["my card"], [], "model_type"),
]


@pytest.mark.parametrize(
    ("case", "body", "loc", "kind"), BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS]
)
def test_bad_input_is_a_400_naming_field_and_reason(client, case, body, loc, kind):
    response = client.post("/predict", json=body)
    assert response.status_code == 400, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == loc
    assert error["type"] == kind
    assert error["msg"]


def test_malformed_json_is_a_400(client):
    response = client.post(
        "/predict", content=b'{"texts": ["a"', headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["detail"][0]["type"] == "json_invalid"


def test_oversized_body_is_a_413(client):
    response = client.post("/predict", json={"texts": ["x" * 3000]})
    assert response.status_code == 413
    assert response.json()["detail"][0]["loc"] == ["body"]


def test_oversized_chunked_body_without_length_is_a_413(client):
    def chunks():
        yield b'{"texts": ["'
        for _ in range(10):
            yield b"x" * 500
        yield b'"]}'

    response = client.post(
        "/predict", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413


def test_body_under_the_limit_in_chunks_still_works(client):
    def chunks():
        yield b'{"texts": ['
        yield b'"my card is lost"]}'

    response = client.post(
        "/predict", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 200
    assert response.json()[0]["label"] in TOY_LABELS
