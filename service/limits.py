"""Request-body limits BentoML lacks: a size limit, and JSON only."""

from __future__ import annotations

import json

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
        await send_error(send, 413, ["body"], "too_large", reason)


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
                return await send_error(send, 415, loc, "unsupported_media_type", reason)
        await self.app(scope, receive, send)


async def send_error(send, status: int, loc: list, kind: str, message: str, headers=()) -> None:
    """A JSON error answer naming the field (`loc`) and the reason, as every 4xx here does."""
    detail = [{"loc": loc, "msg": message, "type": kind}]
    payload = json.dumps({"error": message, "detail": detail}).encode()
    await send_json(send, status, payload, headers)


async def send_json(send, status: int, payload: bytes, headers=()) -> None:
    """Answer with a JSON body from a pure ASGI middleware."""
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        *headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
