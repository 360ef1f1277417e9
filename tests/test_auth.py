"""Bearer-token scopes, request limits and safe adapter loading, on the real server and
on the middleware alone."""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import time
import uuid
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from benchmarks.harness.server import running_server
from service.auth import ADMIN, ANY, BearerAuth, required_scope
from service.routes import METRICS, OPEN, ROUTES, find
from service.settings import ServiceSettings
from tests.factories import TOY_LABELS, publish_adapter
from training.registry import LocalRegistry
from training.settings import SettingsError, load_settings

PREDICT_TOKEN = "predict-token-5JqF0wKc3nQx"
FEEDBACK_TOKEN = "feedback-token-b7Lz2MvR8sTd"  # configured by its hash only
ADMIN_TOKEN = "admin-token-Hq4Wn9Yp1cGe"
INVALID_TOKEN = "not-a-token-we-issued-Xk2P"
TOKENS = {"predict": PREDICT_TOKEN, "feedback": FEEDBACK_TOKEN, "admin": ADMIN_TOKEN}
ORIGIN = "https://app.example"
TOKEN_ENV = {
    "LIVETUNE_TOKENS_PREDICT": PREDICT_TOKEN,
    "LIVETUNE_TOKENS_FEEDBACK": "sha256:" + hashlib.sha256(FEEDBACK_TOKEN.encode()).hexdigest(),
    "LIVETUNE_TOKENS_ADMIN": ADMIN_TOKEN,
}
# CORS is BentoML's own (`http.cors` of the service config), set here as an operator would.
CORS = "services.livetune.http.cors"
CORS_ENV = {
    "BENTOML_CONFIG_OPTIONS": " ".join(
        [
            f"{CORS}.enabled=true",
            f'{CORS}.access_control_allow_origins[0]="{ORIGIN}"',
            f"{CORS}.access_control_allow_methods[0]=POST",
            f"{CORS}.access_control_allow_methods[1]=GET",
            f"{CORS}.access_control_allow_headers[0]=authorization",
            f"{CORS}.access_control_allow_headers[1]=content-type",
        ]
    )
}

# (method, path, body, scope, what the handler itself answers)
ENDPOINTS = [
    ("POST", "/predict", {"texts": ["i lost my card"]}, "predict", 200),
    (
        "POST",
        "/feedback",
        {"samples": [{"text": "my card was lost", "label": "lost_card"}]},
        "feedback",
        200,
    ),  # fmt: skip
    ("POST", "/train", None, "admin", 409),  # the trainer is off here: the handler says so
    ("POST", "/adapters/activate", {"version": "base"}, "admin", 200),
    ("GET", "/status", None, "admin", 200),
    ("GET", "/adapters", None, "admin", 200),
    ("GET", "/labels", None, "predict", 200),
    # A fresh name each call: the second caller would get 409 for the same one.
    ("POST", "/labels", lambda: {"name": f"label_{uuid.uuid4().hex[:8]}"}, "admin", 201),
    ("PATCH", "/labels/lost_card", {"description": "my card is gone"}, "admin", 200),
    ("POST", "/labels/never_added/retire", None, "admin", 404),
    ("GET", "/review", None, "feedback", 200),
]
WRONG_SCOPE = {"predict": "feedback", "feedback": "predict", "admin": "predict"}
OPEN_ROUTES = [r.path for r in ROUTES if r.scope in (OPEN, METRICS)]


def test_the_endpoint_list_is_the_route_table():
    declared = {(r.method, r.path): r.scope for r in ROUTES if r.served_by != "bentoml"}
    listed = {(method, find(method, path).path): scope for method, path, _, scope, _ in ENDPOINTS}
    assert listed == declared
    assert {"/livez", "/readyz", "/healthz", "/docs.json", "/", "/metrics"} <= set(OPEN_ROUTES)


def bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model_dir):
    tmp_path = tmp_path_factory.mktemp("auth")
    with (
        running_server(
            tmp_path,
            LIVETUNE_BASE_MODEL=str(tiny_model_dir),
            LIVETUNE_LABELS=",".join(TOY_LABELS),
            LIVETUNE_TRAINER="false",
            LIVETUNE_MAX_BODY_BYTES="4096",
            **TOKEN_ENV,
            **CORS_ENV,
        ) as server,
        httpx.Client(base_url=server.base, timeout=30) as client,
    ):
        client.tmp_path = tmp_path
        client.log = server.log
        client.registry = LocalRegistry(server.data_dir / "adapters")
        yield client


@pytest.mark.integration
@pytest.mark.parametrize("case", ["none", "invalid", "wrong scope", "right scope", "admin"])
@pytest.mark.parametrize(
    ("method", "path", "body", "scope", "answer"), ENDPOINTS, ids=[e[1] for e in ENDPOINTS]
)
def test_every_endpoint_by_token(served, method, path, body, scope, answer, case):
    token = {
        "none": None,
        "invalid": INVALID_TOKEN,
        "wrong scope": TOKENS[WRONG_SCOPE[scope]],
        "right scope": TOKENS[scope],
        "admin": ADMIN_TOKEN,
    }[case]
    body = body() if callable(body) else body
    response = served.request(method, path, json=body, headers=bearer(token))
    for secret in [*TOKENS.values(), INVALID_TOKEN]:
        assert secret not in response.text
    if case in ("right scope", "admin"):
        assert response.status_code == answer, response.text
        return
    status, kind = {
        "none": (401, "missing_token"),
        "invalid": (401, "invalid_token"),
        "wrong scope": (403, "insufficient_scope"),
    }[case]
    assert response.status_code == status
    assert response.headers["www-authenticate"].startswith("Bearer")
    [error] = response.json()["detail"]
    assert (error["loc"], error["type"]) == (["header", "authorization"], kind)
    if status == 403:
        assert f"'{scope}' scope" in error["msg"]


@pytest.mark.integration
@pytest.mark.parametrize("path", OPEN_ROUTES)
def test_probes_docs_and_metrics_are_open(served, path):
    assert served.get(path).status_code == 200


@pytest.mark.integration
def test_unknown_paths_are_closed_until_mapped(served):
    assert served.get("/nothing-here").status_code == 401
    assert served.get("/nothing-here", headers=bearer(PREDICT_TOKEN)).status_code == 403
    assert served.get("/nothing-here", headers=bearer(ADMIN_TOKEN)).status_code == 404


@pytest.mark.integration
@pytest.mark.parametrize(
    ("method", "path", "status", "kind"),
    [
        # A line break in a label name (schemathesis sent one): it used to match no
        # route and get BentoML's plain-text 404.
        ("POST", "/labels/a%0Ab/retire", 404, "not_found"),
        ("PATCH", "/labels/a%0A", 404, "not_found"),
        ("GET", "/status%00", 404, "not_found"),
        # The retire route exists; DELETE on it does not.
        ("DELETE", "/labels/a/retire", 405, "method_not_allowed"),
    ],
)
def test_odd_paths_and_methods_answer_in_the_error_shape(served, method, path, status, kind):
    answer = served.request(method, path, headers=bearer(ADMIN_TOKEN), json={})
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/json"
    [error] = answer.json()["detail"]
    assert error["type"] == kind, error
    if status == 405:
        assert answer.headers["allow"] == "POST"


@pytest.mark.integration
def test_train_with_the_trainer_off_is_a_409_in_the_error_shape(served):
    answer = served.post("/train", headers=bearer(ADMIN_TOKEN))
    assert answer.status_code == 409
    message = "the trainer is disabled (LIVETUNE_TRAINER=false)"
    assert answer.json() == {
        "error": message,
        "detail": [{"loc": [], "msg": message, "type": "trainer_disabled"}],
    }


@pytest.mark.integration
def test_cors_preflight_passes_and_cross_origin_calls_need_the_token(served):
    preflight = served.options(
        "/predict",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert preflight.status_code == 200, preflight.text
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    body = {"texts": ["lost card"]}
    call = served.post("/predict", json=body, headers={"Origin": ORIGIN, **bearer(PREDICT_TOKEN)})
    assert call.status_code == 200
    assert call.headers["access-control-allow-origin"] == ORIGIN
    assert served.post("/predict", json=body, headers={"Origin": ORIGIN}).status_code == 401
    # An OPTIONS that is not a preflight is no way around the token.
    assert served.options("/predict").status_code == 401


@pytest.mark.integration
def test_oversized_body_is_413_but_only_for_a_caller_with_a_token(served):
    big = {"samples": [{"text": "x" * 5000, "label": "lost_card"}]}
    answer = served.post("/feedback", json=big, headers=bearer(FEEDBACK_TOKEN))
    assert answer.status_code == 413
    assert answer.json()["detail"][0]["loc"] == ["body"]
    # Without a token it is refused before the body is read at all.
    assert served.post("/feedback", json=big).status_code == 401


@pytest.mark.integration
def test_a_form_body_is_415_naming_the_header(served):
    answer = served.post(
        "/predict",
        content=b'{"texts": ["x"]}',
        headers={"content-type": "multipart/form-data", **bearer(PREDICT_TOKEN)},
    )
    assert answer.status_code == 415
    assert answer.json()["detail"][0]["loc"] == ["header", "content-type"]


TRAVERSALS = [
    "../adapters",
    "..",
    "../../etc/passwd",
    "..%2F..%2Fetc",
    "/etc/passwd",
    "v0001-20260101T000000/../../x",
    "v0001-20260101T000000\x00",
    "C:\\Windows",
    "~root",
    "",
]


@pytest.mark.integration
@pytest.mark.parametrize("version", TRAVERSALS)
def test_activate_refuses_path_traversal(served, version):
    before = served.registry.current()
    answer = served.post(
        "/adapters/activate", json={"version": version}, headers=bearer(ADMIN_TOKEN)
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["detail"][0]["loc"] == ["version"]
    assert answer.json()["detail"][0]["type"] == "invalid_version"
    assert served.registry.current() == before


@pytest.mark.integration
def test_a_version_linked_out_of_the_data_dir_is_refused(served, tiny_model_dir, tmp_path):
    outside = LocalRegistry(tmp_path / "elsewhere")
    version = publish_adapter(outside, tiny_model_dir, seed=7)  # a real, loadable adapter
    name = "v0900-20260101T000000"
    (served.registry.root / name).symlink_to(outside.root / version, target_is_directory=True)
    answer = served.post("/adapters/activate", json={"version": name}, headers=bearer(ADMIN_TOKEN))
    assert answer.status_code == 409
    assert "symlink" in answer.json()["error"]
    [error] = answer.json()["detail"]
    assert (error["loc"], error["type"], error["msg"]) == (
        ["version"],
        "adapter_refused",
        answer.json()["error"],
    )
    assert served.registry.current() is None
    listed = served.get("/adapters", headers=bearer(ADMIN_TOKEN)).json()
    assert name not in [a["version"] for a in listed]


class Trap:
    """Unpickling it creates `marker`: proof that something loaded the pickle."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.integration
@pytest.mark.parametrize("keep_safetensors", [True, False], ids=["beside", "instead"])
def test_a_planted_pickle_is_never_loaded(served, tiny_model_dir, tmp_path, keep_safetensors):
    registry, marker = served.registry, tmp_path / "unpickled"
    version = publish_adapter(registry, tiny_model_dir, seed=11)
    folder = registry.root / version
    if not keep_safetensors:  # peft would fall back to adapter_model.bin
        (folder / "adapter_model.safetensors").unlink()
    (folder / "adapter_model.bin").write_bytes(pickle.dumps(Trap(marker)))
    answer = served.post(
        "/adapters/activate", json={"version": version}, headers=bearer(ADMIN_TOKEN)
    )
    assert answer.status_code == 409
    assert "adapter_model.bin" in answer.json()["error"]
    # A writer that bypasses the API and points CURRENT at it directly fares no better.
    (registry.root / "CURRENT").write_text(version + "\n")
    time.sleep(1.5)  # workers poll CURRENT every 0.5 s
    predictions = served.post(
        "/predict", json={"texts": ["lost card"]}, headers=bearer(ADMIN_TOKEN)
    )
    assert predictions.json()[0]["adapter"] == "base"
    assert not marker.exists()
    (registry.root / "CURRENT").unlink()


@pytest.mark.integration
def test_a_current_linked_out_of_the_data_dir_is_not_followed(served, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("outside-the-registry-Qm7\n")
    current = served.registry.root / "CURRENT"
    current.symlink_to(secret)
    try:
        time.sleep(1.5)  # workers poll CURRENT every 0.5 s
        status = served.get("/status", headers=bearer(ADMIN_TOKEN)).json()
        assert status["active_adapter"] == "base"
        assert all(w["adapter"] == "base" for w in status["workers"])
        assert "outside-the-registry" not in served.log.read_text(errors="replace")
    finally:
        current.unlink()


def test_registry_does_not_follow_a_linked_current(tmp_path, tiny_model_dir):
    registry = LocalRegistry(tmp_path / "adapters")
    version = publish_adapter(registry, tiny_model_dir, seed=3)
    (tmp_path / "elsewhere").write_text(version)  # even naming a real version
    (registry.root / "CURRENT").symlink_to(tmp_path / "elsewhere")
    assert registry.current() is None
    registry.activate(version)  # replaces the link with a file
    assert not (registry.root / "CURRENT").is_symlink()
    assert registry.current() == version


@pytest.mark.integration
def test_tokens_never_reach_the_log(served):
    # Runs after the tests above in this module, which sent every token, right and wrong.
    served.post("/predict", json={"texts": ["x"]}, headers=bearer(INVALID_TOKEN))
    log = served.log.read_text(errors="replace")
    assert "bearer tokens required (1 predict, 1 feedback, 1 admin)" in log
    for secret in [*TOKENS.values(), INVALID_TOKEN]:
        assert secret not in log


# The middleware alone, on a stand-in app with CORS inside it as BentoML orders them.


def echo_app(**auth) -> TestClient:
    async def echo(request):
        return JSONResponse({"path": request.url.path})

    inner = Starlette(routes=[Route("/{path:path}", echo, methods=["GET", "POST"])])
    cors = CORSMiddleware(
        inner, allow_origins=[ORIGIN], allow_methods=["POST"], allow_headers=["authorization"]
    )
    return TestClient(BearerAuth(cors, **auth))


@pytest.fixture
def clean_env(monkeypatch):
    for key in [key for key in os.environ if key.startswith("LIVETUNE_")]:
        monkeypatch.delenv(key)


def digests(**tokens) -> dict[str, frozenset[str]]:
    return load_settings(ServiceSettings, require_labels=False, **tokens).token_digests()


SCOPE_CASES = [
    ("POST", "/predict", False, "predict"),
    ("POST", "/feedback", False, "feedback"),
    ("POST", "/train", False, ADMIN),
    ("POST", "/adapters/activate", False, ADMIN),
    ("GET", "/status", False, ADMIN),
    ("GET", "/adapters", False, ADMIN),
    ("GET", "/labels", False, "predict"),
    ("POST", "/labels", False, ADMIN),
    ("PATCH", "/labels/{name}", False, ADMIN),
    ("PATCH", "/labels/lost/card", False, ADMIN),
    ("POST", "/labels/{name}/retire", False, ADMIN),
    ("POST", "/labels/a/b/retire", False, ADMIN),
    ("GET", "/labels/x", False, ADMIN),  # no such route: closed
    ("GET", "/metrics", False, None),
    ("GET", "/metrics", True, ANY),
    ("GET", "/livez", False, None),
    ("GET", "/readyz", False, None),
    ("GET", "/healthz", False, None),
    ("GET", "/docs.json", False, None),
    ("GET", "/schema.json", False, None),
    ("GET", "/", False, None),
    ("GET", "/static_content/swagger-ui.css", False, None),
    ("GET", "/review", False, "feedback"),
    ("GET", "/ui/review", False, None),  # the review page: its API calls carry the token
    ("GET", "/ui/review.js", False, None),
    ("POST", "/predict/", False, ADMIN),  # not the route: closed
    ("GET", "/livez/../predict", False, ADMIN),
    ("GET", "/somewhere-new", False, ADMIN),
]


@pytest.mark.parametrize(("method", "path", "metrics_auth", "scope"), SCOPE_CASES)
def test_scope_map(method, path, metrics_auth, scope):
    assert required_scope(method, path, metrics_auth) == scope


def test_the_scope_map_cases_cover_the_route_table():
    # The route table (tests/test_routes.py checks it against the server) has no path
    # that the explicit cases above leave out.
    assert {(r.method, r.path) for r in ROUTES} <= {(m, p) for m, p, _, _ in SCOPE_CASES}


@pytest.mark.parametrize(
    ("header", "status"),
    [
        (f"Bearer {ADMIN_TOKEN}", 200),
        (f"bearer {ADMIN_TOKEN}", 200),
        (f"Bearer  {ADMIN_TOKEN} ", 200),
        (f"Bearer {PREDICT_TOKEN}", 403),
        (f"Basic {ADMIN_TOKEN}", 401),
        (ADMIN_TOKEN, 401),
        ("Bearer", 401),
        ("Bearer ", 401),
        (f"Bearer {ADMIN_TOKEN}x", 401),
        (f"Bearer {ADMIN_TOKEN[:-1]}", 401),
    ],
)
def test_authorization_header_forms(clean_env, header, status):
    app = echo_app(tokens=digests(tokens_predict=PREDICT_TOKEN, tokens_admin=ADMIN_TOKEN))
    assert app.get("/status", headers={"Authorization": header}).status_code == status


def test_a_token_may_hold_several_scopes(clean_env):
    app = echo_app(tokens=digests(tokens_predict=PREDICT_TOKEN, tokens_feedback=PREDICT_TOKEN))
    assert app.post("/predict", headers=bearer(PREDICT_TOKEN)).status_code == 200
    assert app.post("/feedback", headers=bearer(PREDICT_TOKEN)).status_code == 200
    assert app.post("/train", headers=bearer(PREDICT_TOKEN)).status_code == 403


def test_metrics_open_by_default_and_any_token_when_protected(clean_env):
    tokens = digests(tokens_predict=PREDICT_TOKEN, tokens_admin=ADMIN_TOKEN)
    assert echo_app(tokens=tokens).get("/metrics").status_code == 200
    protected = echo_app(tokens=tokens, metrics_auth=True)
    assert protected.get("/metrics").status_code == 401
    assert protected.get("/metrics", headers=bearer(INVALID_TOKEN)).status_code == 401
    assert protected.get("/metrics", headers=bearer(PREDICT_TOKEN)).status_code == 200


def test_preflight_reaches_cors_without_a_token(clean_env):
    app = echo_app(tokens=digests(tokens_admin=ADMIN_TOKEN))
    headers = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
    preflight = app.options("/predict", headers=headers)
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert app.options("/predict").status_code == 401


@pytest.fixture
def livetune_log(caplog, monkeypatch):
    # Captured here alone: whether `livetune` propagates to the root logger depends on
    # which tests ran before (use_bentoml_logging() stops it).
    logger = logging.getLogger("livetune.auth")
    monkeypatch.setattr(logger, "propagate", False)
    logger.addHandler(caplog.handler)
    yield caplog
    logger.removeHandler(caplog.handler)


def test_open_mode_passes_everything_and_warns_once(clean_env, livetune_log):
    app = echo_app(tokens=digests())
    warnings = [r for r in livetune_log.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "OPEN" in warnings[0].getMessage()
    assert "LIVETUNE_TOKENS_ADMIN" in warnings[0].getMessage()
    for path in ("/predict", "/feedback", "/train", "/adapters/activate", "/metrics"):
        assert app.post(path).status_code == 200
    assert len([r for r in livetune_log.records if r.levelno == logging.WARNING]) == 1


def test_with_tokens_the_start_line_counts_them_and_never_shows_them(clean_env, livetune_log):
    echo_app(tokens=digests(tokens_predict=f"{PREDICT_TOKEN},{FEEDBACK_TOKEN}"))
    [line] = [r.getMessage() for r in livetune_log.records]
    assert "2 predict, 0 feedback, 0 admin" in line
    assert PREDICT_TOKEN not in line and FEEDBACK_TOKEN not in line


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("LIVETUNE_TOKENS_PREDICT", "short-secret"),  # under 16 characters
        ("LIVETUNE_TOKENS_ADMIN", f"{ADMIN_TOKEN},has space in-it-0123456789"),
        ("LIVETUNE_TOKENS_FEEDBACK", "sha256:abc123"),
        ("LIVETUNE_TOKENS_FEEDBACK", "sha256:" + "g" * 64),
        ("LIVETUNE_TOKENS_ADMIN", f"{ADMIN_TOKEN};x"),
    ],
)
def test_a_bad_token_setting_names_the_variable_never_the_token(
    clean_env, monkeypatch, variable, value
):
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=variable) as error:
        load_settings(ServiceSettings, require_labels=False)
    for part in value.split(","):
        assert part not in str(error.value)


def test_metrics_auth_without_tokens_is_refused(clean_env, monkeypatch):
    monkeypatch.setenv("LIVETUNE_METRICS_AUTH", "true")
    with pytest.raises(SettingsError, match="LIVETUNE_METRICS_AUTH"):
        load_settings(ServiceSettings, require_labels=False)


def test_settings_never_show_a_token(clean_env, monkeypatch):
    monkeypatch.setenv("LIVETUNE_TOKENS_ADMIN", ADMIN_TOKEN)
    settings = load_settings(ServiceSettings, require_labels=False)
    assert ADMIN_TOKEN not in repr(settings) and ADMIN_TOKEN not in str(settings.model_dump())
    assert settings.token_digests()["admin"] == {hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest()}


def test_a_hashed_token_equals_the_plain_one(clean_env):
    plain = digests(tokens_admin=ADMIN_TOKEN)["admin"]
    hashed = "sha256:" + hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest().upper()
    assert digests(tokens_admin=hashed)["admin"] == plain
