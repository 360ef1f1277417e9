"""Bearer tokens with scopes: who may predict, who may send feedback, who may operate.

A pure ASGI middleware. BentoML runs user middleware outside its CORS middleware, so
a CORS preflight (which never carries a token) is let through to it.
"""

from __future__ import annotations

import hashlib
import hmac
import logging

from service.errors import send_error
from service.routes import ADMIN, METRICS, OPEN, OPEN_PREFIXES, find, route_path
from service.settings import TOKEN_SCOPES

# Its own level: the middleware is built before the service instance sets up logging,
# and BentoML passes only warnings of loggers it does not know to its handler.
log = logging.getLogger("livetune.auth")
log.setLevel(logging.INFO)
ANY = "any"  # any valid token: /metrics with LIVETUNE_METRICS_AUTH=true
REALM = 'Bearer realm="livetune"'


def required_scope(method: str, path: str, metrics_auth: bool = False) -> str | None:
    """The scope `method` on `path` needs (service/routes.py), None if open. Anything not
    declared needs admin, so a route added later is closed until declared, and no client
    learns which paths or methods exist."""
    if path.startswith(OPEN_PREFIXES):
        return None
    route = find(method, path)
    scope = route.scope if route is not None else ADMIN
    if scope == METRICS:
        return ANY if metrics_auth else None
    return None if scope == OPEN else scope


def allows(granted: set[str], needed: str) -> bool:
    """Whether a token with scopes `granted` may make a request that needs `needed`."""
    return bool(granted) and (needed == ANY or needed in granted or ADMIN in granted)


class BearerAuth:
    """Each request needs `Authorization: Bearer <token>` of the scope its path needs.

    With no token configured the API is open, and each worker says so once at start.
    Tokens are kept as SHA-256 digests and compared in constant time, every one of them.
    """

    def __init__(self, app, tokens: dict[str, frozenset[str]], metrics_auth: bool = False):
        self.app = app
        self.digests = {
            scope: tuple(bytes.fromhex(d) for d in tokens.get(scope, ())) for scope in TOKEN_SCOPES
        }
        self.enabled = any(self.digests.values())
        self.metrics_auth = metrics_auth
        announce(self.digests, metrics_auth)

    async def __call__(self, scope, receive, send):
        if not self.enabled or scope["type"] not in ("http", "websocket") or is_preflight(scope):
            return await self.app(scope, receive, send)
        needed = required_scope(scope.get("method", "GET"), route_path(scope), self.metrics_auth)
        if needed is None:
            return await self.app(scope, receive, send)
        token = bearer_token(scope["headers"])
        granted = self.scopes_of(token) if token is not None else set()
        if allows(granted, needed):
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1008})
        status, kind, message, challenge = refusal(token, granted, needed)
        www = [(b"www-authenticate", challenge.encode())]
        await send_error(send, status, message, ["header", "authorization"], kind, www)

    def scopes_of(self, token: bytes) -> set[str]:
        """Scopes of the token; every configured digest is compared, no early exit."""
        presented = hashlib.sha256(token).digest()
        return {
            scope
            for scope, digests in self.digests.items()
            if any([hmac.compare_digest(presented, digest) for digest in digests])
        }


def announce(digests: dict[str, tuple], metrics_auth: bool) -> None:
    """Say at start whether the API is open (a warning) or which tokens it takes."""
    if not any(digests.values()):
        log.warning(
            "SECURITY: no LIVETUNE_TOKENS_* set, so the API is OPEN: anyone who can reach"
            " this port may predict, send feedback, start training and activate adapters."
            " Set LIVETUNE_TOKENS_PREDICT, LIVETUNE_TOKENS_FEEDBACK and LIVETUNE_TOKENS_ADMIN."
        )
        return
    counts = ", ".join(f"{len(digests[scope])} {scope}" for scope in TOKEN_SCOPES)
    metrics = "needs a token" if metrics_auth else "is open"
    log.info("bearer tokens required (%s); probes and docs are open, /metrics %s", counts, metrics)


def is_preflight(scope) -> bool:
    """A CORS preflight: OPTIONS with Origin and Access-Control-Request-Method."""
    if scope.get("method") != "OPTIONS":
        return False
    names = {name for name, _ in scope["headers"]}
    return b"origin" in names and b"access-control-request-method" in names


def bearer_token(headers) -> bytes | None:
    """The token of the first Authorization header, if it uses the Bearer scheme."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.strip().partition(b" ")
            token = token.strip()
            return token if scheme.lower() == b"bearer" and token else None
    return None


def refusal(token: bytes | None, granted: set[str], needed: str) -> tuple[int, str, str, str]:
    """(status, error type, message, WWW-Authenticate) for a refused request; never the token."""
    if token is None:
        message = "this endpoint needs a token: send the header `Authorization: Bearer <token>`"
        return 401, "missing_token", message, REALM
    if not granted:
        invalid = f'{REALM}, error="invalid_token"'
        return 401, "invalid_token", "the bearer token is not valid", invalid
    has = ", ".join(sorted(granted))
    message = f"this endpoint needs a token with the {needed!r} scope; this one has {has}"
    challenge = f'{REALM}, error="insufficient_scope", scope="{needed}"'
    return 403, "insufficient_scope", message, challenge
