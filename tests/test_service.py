"""HTTP tests through the service's ASGI app (in-process, real BentoML app, tiny model)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from tests.conftest import TOY_LABELS
from tests.factories import publish_adapter
from training.registry import LocalRegistry


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
    ("NUL in a text", {"texts": ["ok", "my\x00card"]}, ["texts", 1], "value_error"),
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


def refusal(message: str, loc: list, kind: str) -> dict:
    """The error body every refusal of livetune's own has."""
    return {"error": message, "detail": [{"loc": loc, "msg": message, "type": kind}]}


@pytest.fixture
def live():
    """The in-process service instance behind `client`."""
    import bentoml

    return bentoml.get_current_service()


def test_activate_refusals_name_the_version(client, live, tmp_path, tiny_model_dir):
    before = live.registry.current()
    unknown = client.post("/adapters/activate", json={"version": "v9999-20990101T000000"})
    assert unknown.status_code == 404
    assert unknown.json() == refusal(unknown.json()["error"], ["version"], "unknown_version")
    invalid = client.post("/adapters/activate", json={"version": "../../etc"})
    assert invalid.status_code == 400
    assert invalid.json() == refusal(invalid.json()["error"], ["version"], "invalid_version")
    outside = LocalRegistry(tmp_path / "elsewhere")
    linked = live.registry.root / "v0900-20260101T000000"
    linked.symlink_to(outside.root / publish_adapter(outside, tiny_model_dir, seed=5))
    try:
        refused = client.post("/adapters/activate", json={"version": linked.name})
    finally:
        linked.unlink()
    assert refused.status_code == 409
    assert refused.json() == refusal(refused.json()["error"], ["version"], "adapter_refused")
    assert "symlink" in refused.json()["error"]
    assert live.registry.current() == before


def test_a_model_not_loaded_is_a_503_in_the_error_shape(client, live, monkeypatch):
    monkeypatch.setattr(live, "serving", None)
    message = "the model is not loaded yet; see /readyz"
    predict = client.post("/predict", json={"texts": ["my card is lost"]})
    assert (predict.status_code, predict.json()) == (503, refusal(message, [], "not_ready"))
    activate = client.post("/adapters/activate", json={"version": "v0001-20260101T000000"})
    assert activate.status_code == 503
    assert activate.json() == refusal(message, ["version"], "not_ready")


class Answer:
    """A stand-in for bentoml.Context: the handler sets `response.status_code` on it."""

    def __init__(self):
        self.response = SimpleNamespace(status_code=200)


@pytest.mark.parametrize(
    ("trainer", "status", "kind"),
    [
        (None, 409, "trainer_disabled"),
        (SimpleNamespace(train=lambda: {"already_running": True}), 409, "training_in_progress"),
        (SimpleNamespace(train=lambda: {"already_running": False}), 202, None),
    ],
    ids=["trainer off", "run in progress", "accepted"],
)
def test_train_answers_202_or_a_409_in_the_error_shape(client, trainer, status, kind):
    from service.service import Livetune

    ctx = Answer()
    # The handler itself, on a stand-in instance: the in-process Trainer would renice
    # and occupy this test process.
    answer = Livetune.apis["train"].func(SimpleNamespace(trainer=trainer), ctx)
    assert ctx.response.status_code == status  # BentoML answers with ctx's status
    if kind is None:
        assert answer.model_dump() == {"accepted": True}
        return
    body = json.loads(answer.body)
    assert (answer.status_code, body) == (409, refusal(body["error"], [], kind))
