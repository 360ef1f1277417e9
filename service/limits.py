"""A request-body size limit: BentoML reads any body whole and has no limit of its own."""

from __future__ import annotations

import json

BODY_METHODS = {"POST", "PUT", "PATCH"}


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
        payload = json.dumps(
            {"error": reason, "detail": [{"loc": ["body"], "msg": reason, "type": "too_large"}]}
        ).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
