"""/docs.json: BentoML's OpenAPI document, completed with what livetune really answers.

BentoML documents every error body as `{"error": str, "detail": str}`, but its own
validation errors (and ours) carry a list in `detail`; it does not know the statuses
our code and middleware send (202, 401, 403, 409, 413, 415, 503), the token scopes,
nor the GET routes mounted from service/admin.py. Clients, the docs page and the fuzz
test (tests/test_fuzz.py) read this document, so it has to be true.
"""

from __future__ import annotations

import json

from service.auth import ADMIN, ANY, required_scope
from service.limits import send_json

ERROR_REF = {"$ref": "#/components/schemas/Error"}
ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {"type": "string", "description": "What is wrong, in one sentence."},
        "detail": {
            "type": "array",
            "description": "One item per problem: where (`loc`) and why (`msg`, `type`).",
            "items": {
                "type": "object",
                "required": ["loc", "msg"],
                "properties": {
                    "loc": {
                        "type": "array",
                        "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                    },
                    "msg": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
    },
}
ERRORS = {
    400: "Invalid input: `detail` names each field and the reason.",
    401: "No token, or not a valid one: send `Authorization: Bearer <token>`.",
    403: "The token lacks the scope this endpoint needs.",
    404: "Not found.",
    409: "Conflicts with the service's state: see `error`.",
    413: "The body is larger than LIVETUNE_MAX_BODY_BYTES.",
    415: "A form or multipart body: send JSON.",
    500: "A bug: please report it with the server log.",
    503: "The model is not loaded yet (see /readyz), or the batching queue is full.",
}
# Statuses each operation may send beyond 200, 400 and 500.
STATUSES = {
    ("post", "/predict"): (413, 415, 503),
    ("post", "/feedback"): (413, 415, 503),
    ("post", "/train"): (409, 413, 415),
    ("post", "/adapters/activate"): (404, 409, 413, 415, 503),
}
PROBES = ("/livez", "/healthz", "/readyz")


def json_body(description: str, schema: dict) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


# The GET routes of service/admin.py: (description, answer schema).
OPERATOR_ROUTES = {
    "/status": (
        "Base model, labels, the adapter each worker serves, pending samples, last run.",
        {"type": "object", "required": ["base_model", "labels", "ready", "active_adapter"]},
    ),
    "/adapters": (
        "Every adapter version, newest first: metrics, parent, data size, created, active.",
        {"type": "array", "items": {"type": "object", "required": ["version", "active"]}},
    ),
}
# Answers BentoML cannot infer from a handler that returns a JSONResponse.
ANSWERS = {
    "/train": ("202", json_body("Run accepted.", {"type": "object", "required": ["accepted"]})),
    "/adapters/activate": (
        "200",
        json_body("Now active.", {"type": "object", "required": ["active"]}),
    ),
}


def amend(spec: dict, secured: bool, metrics_auth: bool = False) -> dict:
    """BentoML's spec (as `asdict()` gives it) with true error bodies, statuses and scopes."""
    spec = json.loads(json.dumps(spec))  # a copy, with status keys as strings, as JSON has them
    spec.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR
    paths = spec["paths"]
    for path, (description, schema) in OPERATOR_ROUTES.items():
        answer = json_body(description, schema)
        paths[path] = {"get": {"description": description, "responses": {"200": answer}}}
    for path, (status, answer) in ANSWERS.items():
        responses = paths[path]["post"]["responses"]
        responses.pop("200", None)
        responses[status] = answer
    for path, item in paths.items():
        for method, operation in item.items():
            responses = operation["responses"]
            for status in [*responses, *STATUSES.get((method, path), ())]:
                if int(status) in ERRORS:
                    responses[str(status)] = json_body(ERRORS[int(status)], ERROR_REF)
            if path in PROBES:  # Starlette's plain-text 503
                responses["503"] = {"description": "Not alive, or not ready yet."}
            if secured:
                _secure(path, operation, metrics_auth)
    if secured:
        scheme = {"type": "http", "scheme": "bearer", "description": "LIVETUNE_TOKENS_*"}
        spec["components"]["securitySchemes"] = {"bearer": scheme}
    return spec


def _secure(path: str, operation: dict, metrics_auth: bool) -> None:
    needed = required_scope(path, metrics_auth)
    if needed is None:
        return
    operation["security"] = [{"bearer": []}]
    who = "any token" if needed == ANY else f"a token with the `{needed}` scope"
    who += "" if needed in (ANY, ADMIN) else " (or `admin`)"
    operation["description"] = f"{operation.get('description', '')}\n\nNeeds {who}.".strip()
    operation["responses"]["401"] = json_body(ERRORS[401], ERROR_REF)
    if needed != ANY:
        operation["responses"]["403"] = json_body(ERRORS[403], ERROR_REF)


class OpenAPIDocs:
    """Pure ASGI middleware answering GET /docs.json with the amended document."""

    def __init__(self, app, service, secured: bool, metrics_auth: bool = False):
        self.app = app
        self.service = service
        self.secured = secured
        self.metrics_auth = metrics_auth
        self._body: bytes | None = None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != "/docs.json" or scope["method"] != "GET":
            return await self.app(scope, receive, send)
        if self._body is None:  # the service and its settings are fixed for the process
            spec = amend(self.service.openapi_spec.asdict(), self.secured, self.metrics_auth)
            self._body = json.dumps(spec).encode()
        await send_json(send, 200, self._body)
