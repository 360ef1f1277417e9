"""Request gates BentoML lacks: a body size limit, JSON bodies only, a loaded model, and
no control characters in a path."""

from __future__ import annotations

from collections.abc import Callable

import anyio

from service.errors import send_error
from service.routes import route_path
from training.labels import CONTROL

BODY_METHODS = {"POST", "PUT", "PATCH"}
# BentoML parses these as forms; a malformed multipart body then surfaces as a 500.
FORM_TYPES = (b"multipart/form-data", b"application/x-www-form-urlencoded")


class BodySizeLimit:
    """Pure ASGI middleware: a body over `max_bytes` gets 413 before the app sees it.

    The body is buffered here (at most `max_bytes`) and replayed to the app, because an
    error raised from inside the app's `receive` would surface as a 500 through
    BentoML's catch-all handler.
    """

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._refuse(send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return await self._refuse(send)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send):
        reason = f"request body is larger than {self.max_bytes} bytes"
        await send_error(send, 413, reason, ["body"], "too_large")


class JSONBodies:
    """Pure ASGI middleware: a form or multipart body gets 415; every endpoint takes JSON."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] in BODY_METHODS:
            content_type = dict(scope["headers"]).get(b"content-type", b"").strip().lower()
            if content_type.startswith(FORM_TYPES):
                reason = "the body must be JSON: send `content-type: application/json`"
                loc = ["header", "content-type"]
                return await send_error(send, 415, reason, loc, "unsupported_media_type")
        await self.app(scope, receive, send)


class PlainPaths:
    """Pure ASGI middleware: a path holding a control character ("%0A") is a 404 in the
    error shape. No route and no label name (training.labels.LABEL_NAME) holds one, and
    Starlette's routing never reaches the handlers with one (its `path` convertor is
    `.*`, which stops at a line break), so BentoML would answer its plain-text 404."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and CONTROL.search(scope["path"]):
            reason = f"no such path {scope['path']!r}: a path holds no control characters"
            return await send_error(send, 404, reason, ["path"], "not_found")
        await self.app(scope, receive, send)


class ModelGate:
    """Pure ASGI middleware: a route that needs the model answers 503, in our error shape,
    while the model is not loaded.

    The check cannot live in /predict's handler: a batched handler cannot return a response
    of its own, and BentoML answers any 5xx raised in it with a generic "unexpected error".
    `is_ready(timeout)` says whether the model is loaded, waiting up to `timeout` seconds.
    """

    def __init__(
        self, app, paths: frozenset[str], is_ready: Callable[[float], bool], wait_s: float
    ):
        self.app = app
        self.paths = paths
        self.is_ready = is_ready
        self.wait_s = wait_s

    async def __call__(self, scope, receive, send):
        # Ready is checked without waiting first: once loaded, no thread hop per request.
        if (
            scope["type"] == "http"
            and route_path(scope) in self.paths
            and not self.is_ready(0)
            and not await anyio.to_thread.run_sync(self.is_ready, self.wait_s)
        ):
            reason = "the model is not loaded yet; see /readyz"
            return await send_error(send, 503, reason, [], "not_ready")
        await self.app(scope, receive, send)
