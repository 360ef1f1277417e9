"""The one error body of every 4xx/5xx livetune itself answers, and the two ways to send it.

`{"error": str, "detail": [{"loc": [...], "msg": str, "type": str}, ...]}`: the same shape
as BentoML's own validation 400s, so a client reads every refusal the same way.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from starlette.responses import JSONResponse


def error_body(
    message: str, loc: Sequence[str | int] = (), kind: str = "invalid", items=None
) -> dict:
    """The error body: `message` says what is wrong; `detail` says where and why, one item
    per problem (`items`, or else one made of `loc`, `message` and `kind`)."""
    detail = (
        list(items) if items is not None else [{"loc": list(loc), "msg": message, "type": kind}]
    )
    return {"error": message, "detail": detail}


def error_response(
    status: int, message: str, loc: Sequence[str | int] = (), kind: str = "invalid", items=None
) -> JSONResponse:
    """The error body as the answer of a handler or a Starlette route."""
    return JSONResponse(error_body(message, loc, kind, items), status_code=status)


def unavailable(what: str, exc: Exception) -> JSONResponse:
    """503 for a dependency that is down (the store, the registry): retry, nothing was done."""
    message = f"the {what} is unavailable ({exc}); nothing was changed, retry later"
    return error_response(503, message, [what], f"{what}_unavailable")


async def send_error(send, status: int, message: str, loc, kind: str, headers=()) -> None:
    """The error body as the answer of a pure ASGI middleware."""
    payload = json.dumps(error_body(message, loc, kind)).encode()
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
