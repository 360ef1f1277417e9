"""The route table is the one source: the server serves what it declares, auth and
/docs.json read their scopes, statuses and answers from it. Plus the one error shape."""

from __future__ import annotations

import dataclasses
import re

import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from service.auth import ANY, required_scope
from service.errors import error_body
from service.limits import ModelGate
from service.routes import METRICS, OPEN, OPEN_PREFIXES, ROUTES, find
from service.schemas import StatusOut, TrainingRunOut, WorkerState
from service.swap import SwapState
from training.store import TrainingRun

BENTOML_ERRORS = {"400", "404", "500"}  # what BentoML documents for every API of its own
SERVED = [r for r in ROUTES if r.served_by != "bentoml"]


def served_routes(app) -> tuple[set[tuple[str, str]], set[str]]:
    """({(method, path)} the app routes, {mount prefixes}): walking Starlette's router."""
    operations, prefixes = set(), set()
    for route in app.routes:
        if isinstance(route, Mount) and route.path:
            prefixes.add(route.path + "/")
        elif isinstance(route, Mount):  # mounted at "/": its routes are ours to declare
            inner, _ = served_routes(route)
            operations |= inner
        elif isinstance(route, Route):  # a `{param:path}` is the table's `{param}`
            path = re.sub(r":\w+\}", "}", route.path)
            operations |= {(m, path) for m in route.methods - {"HEAD"}}
    return operations, prefixes


def test_every_route_the_server_serves_is_in_the_table(client):
    operations, prefixes = served_routes(client.app)
    assert {(m, p) for m, p in operations if find(m, p) is None} == set()
    assert prefixes <= set(OPEN_PREFIXES)
    # ...and the table declares nothing the server does not serve.
    assert {(r.method, r.path) for r in ROUTES} == operations


def test_every_published_route_is_mapped_or_deliberately_open(client):
    # `client` is the in-process service (no tokens): its OpenAPI document lists every route.
    paths = set(client.get("/docs.json").json()["paths"])
    assert paths - {r.path for r in ROUTES} == set()


def test_bentoml_apis_and_the_mounted_app_are_the_tables(client):
    from service import admin
    from service.service import Livetune

    apis = {("POST", api.route) for api in Livetune.apis.values()}
    assert apis == {(r.method, r.path) for r in ROUTES if r.served_by == "api"}
    mounted, _ = served_routes(admin.routes)
    assert mounted == {(r.method, r.path) for r in ROUTES if r.served_by == "mounted"}


@pytest.mark.parametrize("route", ROUTES, ids=[f"{r.method} {r.path}" for r in ROUTES])
def test_auth_takes_each_scope_from_the_table(route):
    expected = {OPEN: (None, None), METRICS: (None, ANY)}.get(route.scope)
    path = route.path.replace("{name}", "lost/card?")  # a concrete path for a template
    found = required_scope(route.method, path), required_scope(route.method, path, True)
    assert found == (expected or (route.scope, route.scope))


def test_scopes_go_by_method_and_path():
    # Another method on a declared path is not that route's: closed, as undeclared paths are.
    assert required_scope("DELETE", "/predict") == "admin"
    assert required_scope("HEAD", "/livez") is None  # HEAD is GET's
    for route in ROUTES:
        if route.templated:
            assert find(route.method, route.path) is route


@pytest.fixture(scope="module")
def docs(client) -> dict:
    return client.get("/docs.json").json()


@pytest.mark.parametrize("route", ROUTES, ids=[f"{r.method} {r.path}" for r in ROUTES])
def test_docs_json_states_the_tables_summary_and_statuses(docs, route):
    operation = docs["paths"].get(route.path, {}).get(route.method.lower())
    if operation is None:
        assert route.served_by == "bentoml"  # BentoML leaves its docs pages out
        return
    assert operation["summary"] == route.summary
    extra = BENTOML_ERRORS if route.served_by == "api" else set()
    statuses = {str(route.ok), *map(str, route.answers), *extra}
    assert set(operation["responses"]) == statuses  # this client has no tokens: no 401/403
    for status, answer in operation["responses"].items():
        if int(status) >= 400 and route.served_by != "bentoml":
            schema = answer["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/Error"}


def answer_schema(docs: dict, method: str, path: str, status: str) -> dict:
    answer = docs["paths"][path][method]["responses"][status]
    schema = answer["content"]["application/json"]["schema"]
    if "$ref" in schema:
        schema = docs["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def test_docs_json_states_the_typed_answers(docs):
    train = answer_schema(docs, "post", "/train", "202")
    assert train["required"] == ["accepted"] and train["properties"]["accepted"]["const"] is True
    activated = answer_schema(docs, "post", "/adapters/activate", "200")
    assert activated["required"] == ["active"]
    status = answer_schema(docs, "get", "/status", "200")
    assert set(status["required"]) == set(StatusOut.model_fields)
    assert status["properties"]["workers"]["items"] == {"$ref": "#/components/schemas/WorkerState"}
    adapters = answer_schema(docs, "get", "/adapters", "200")
    assert adapters["items"] == {"$ref": "#/components/schemas/AdapterOut"}
    components = docs["components"]["schemas"]
    assert {"WorkerState", "TrainingRunOut", "AdapterOut", "Error"} <= set(components)
    assert "version" in components["AdapterOut"]["required"]


@pytest.mark.parametrize(
    ("model", "record", "added"),
    [
        (WorkerState, SwapState, ["host", "last_seen", "stale"]),  # from the heartbeat
        (TrainingRunOut, TrainingRun, []),
    ],
)
def test_status_models_have_the_fields_of_what_they_report(model, record, added):
    # /status answers these records through the models: a field added to one needs the other.
    reported = [name for name in model.model_fields if name not in added]
    assert reported == [f.name for f in dataclasses.fields(record)]
    assert set(added) <= set(model.model_fields)


def test_the_error_body_has_one_shape():
    assert error_body("no such version", ["version"], "unknown_version") == {
        "error": "no such version",
        "detail": [{"loc": ["version"], "msg": "no such version", "type": "unknown_version"}],
    }
    items = [{"loc": ["samples", 1, "label"], "msg": "unknown", "type": "x", "valid_labels": []}]
    assert error_body("1 invalid sample(s)", items=items)["detail"] == items


def gated(ready: list[bool]) -> TestClient:
    """A stand-in app behind ModelGate; `ready` answers its is_ready calls in turn."""

    async def echo(request):
        return JSONResponse({"path": request.url.path})

    inner = Starlette(routes=[Route("/{path:path}", echo, methods=["GET", "POST"])])
    answers = iter(ready)
    return TestClient(ModelGate(inner, frozenset({"/predict"}), lambda _: next(answers), 0.01))


def test_the_model_gate_answers_503_in_the_error_shape_until_ready():
    response = gated([False, False]).post("/predict")
    assert response.status_code == 503
    message = "the model is not loaded yet; see /readyz"
    assert response.json() == {
        "error": message,
        "detail": [{"loc": [], "msg": message, "type": "not_ready"}],
    }
    assert gated([False, True]).post("/predict").status_code == 200  # loaded while waiting
    assert gated([True]).post("/predict").status_code == 200
    assert gated([]).post("/feedback").status_code == 200  # not gated: never asks
