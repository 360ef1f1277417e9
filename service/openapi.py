"""/docs.json: BentoML's OpenAPI document, completed with what livetune really answers.

BentoML documents every error body as `{"error": str, "detail": str}`, but its own
validation errors (and ours, service/errors.py) carry a list in `detail`; it does not know
the statuses our code and middleware send (202, 401, 403, 409, 413, 415, 503), the token
scopes, nor the GET routes mounted from service/admin.py. All of that comes from the route
table (service/routes.py). Clients, the docs page and the fuzz test (tests/test_fuzz.py)
read this document, so it has to be true.
"""

from __future__ import annotations

import json
import re
from http import HTTPStatus

from pydantic import TypeAdapter

from service.auth import ADMIN, ANY, required_scope
from service.errors import send_json
from service.routes import ROUTES, Route, find

SCHEMAS = "#/components/schemas/"
ERROR_REF = {"$ref": SCHEMAS + "Error"}
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
    503: "The model is not loaded yet (see /readyz), the batching queue is full, or the"
    " store or registry is unreachable (`error` says which; retry).",
}


def json_body(description: str, schema: dict) -> dict:
    """An OpenAPI response with a JSON body of `schema`."""
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def amend(spec: dict, secured: bool, metrics_auth: bool = False) -> dict:
    """BentoML's spec (as `asdict()` gives it) with true error bodies, statuses and scopes."""
    spec = json.loads(json.dumps(spec))  # a copy, with status keys as strings, as JSON has them
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    schemas["Error"] = ERROR
    paths = spec["paths"]
    for route in ROUTES:
        if route.served_by == "mounted":
            operation = mounted_operation(route, schemas)
            paths.setdefault(route.path, {})[route.method.lower()] = operation
    for path, item in paths.items():
        for method, operation in item.items():
            route = find(method, path)
            if route is not None:
                document(route, operation)
            _error_bodies(operation, route)
            if secured:
                _secure(method, path, operation, metrics_auth)
    if secured:
        scheme = {"type": "http", "scheme": "bearer", "description": "LIVETUNE_TOKENS_*"}
        spec["components"]["securitySchemes"] = {"bearer": scheme}
    return spec


def mounted_operation(route: Route, schemas: dict) -> dict:
    """The operation of a route BentoML does not know: its answer's schema from its type."""
    schema = TypeAdapter(route.answer).json_schema(ref_template=SCHEMAS + "{model}")
    schemas.update(schema.pop("$defs", {}))
    operation = {
        "description": route.summary,
        "responses": {str(route.ok): json_body(route.summary, schema)},
    }
    params = re.findall(r"\{(\w+)\}", route.path)
    if params:
        operation["parameters"] = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in params
        ]
    if route.body is not None:
        body = TypeAdapter(route.body).json_schema(ref_template=SCHEMAS + "{model}")
        schemas.update(body.pop("$defs", {}))
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": body}},
        }
    return operation


def document(route: Route, operation: dict) -> None:
    """The table's summary, success status and further statuses, on one operation."""
    operation["summary"] = route.summary
    responses = operation["responses"]
    if route.ok != 200 and "200" in responses:  # BentoML says 200 of every typed answer
        answer = responses.pop("200")
        responses[str(route.ok)] = {**answer, "description": HTTPStatus(route.ok).phrase}
    for status in route.answers:
        if route.served_by == "bentoml":  # e.g. a probe's 503: BentoML's plain text
            responses[str(status)] = {"description": f"{HTTPStatus(status).phrase} (plain text)"}
        else:
            responses[str(status)] = json_body(ERRORS[status], ERROR_REF)


def _error_bodies(operation: dict, route: Route | None) -> None:
    """Our error body for every error status BentoML documents with its own."""
    if route is not None and route.served_by == "bentoml":
        return
    responses = operation["responses"]
    for status in list(responses):
        if int(status) in ERRORS:
            responses[status] = json_body(ERRORS[int(status)], ERROR_REF)


def _secure(method: str, path: str, operation: dict, metrics_auth: bool) -> None:
    needed = required_scope(method, path, metrics_auth)
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
