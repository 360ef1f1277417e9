"""Every route livetune serves, declared once.

Auth (service/auth.py) takes each path's token scope from here, /docs.json
(service/openapi.py) its summaries, statuses and mounted routes, service/admin.py builds
its GET routes from it, and the tests check it against what the server really serves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from service.metrics import METRICS_PATH
from service.schemas import AdapterOut, StatusOut
from service.settings import TOKEN_SCOPES

PREDICT, FEEDBACK, ADMIN = TOKEN_SCOPES
OPEN = "open"  # never a token: orchestrators call probes bare, and docs hold no secrets
METRICS = "metrics"  # open, or any valid token with LIVETUNE_METRICS_AUTH=true
# The docs page's static files; any other path not in the table needs admin.
OPEN_PREFIXES = ("/static_content/", "/assets/")


@dataclass(frozen=True)
class Route:
    """One route: who may call it, what it is for, and what it may answer."""

    method: str
    path: str
    scope: str  # PREDICT, FEEDBACK, ADMIN, OPEN or METRICS
    summary: str
    answers: tuple[int, ...] = ()  # statuses it may send beyond 200, 400 and 500
    ok: int = 200  # its success status
    # "api": a @bentoml.api of Livetune; "mounted": service/admin.py's Starlette app;
    # "bentoml": answered by BentoML itself (its errors are plain text, not ours).
    served_by: Literal["api", "mounted", "bentoml"] = "api"
    answer: Any = None  # the answer's type, for mounted routes (BentoML reads the APIs')
    needs_model: bool = False  # 503 in our error shape until the model is loaded


# fmt: off
ROUTES = (
    Route("POST", "/predict", PREDICT, "Classify texts.", (413, 415, 503), needs_model=True),
    Route("POST", "/feedback", FEEDBACK, "Store labeled corrections.", (413, 415, 503)),
    Route("POST", "/train", ADMIN, "Start a training run now.", (409, 413, 415), ok=202),
    Route("POST", "/adapters/activate", ADMIN,
          "Make a version the active adapter: rollback or roll forward.",
          (404, 409, 413, 415, 503)),
    Route("GET", "/status", ADMIN,
          "Base model, labels, the adapter each worker serves, pending samples, last run.",
          (503,), served_by="mounted", answer=StatusOut),
    Route("GET", "/adapters", ADMIN,
          "Every adapter version, newest first: metrics, parent, data size, created, active.",
          (503,), served_by="mounted", answer=list[AdapterOut]),
    Route("GET", "/livez", OPEN, "Liveness: 503 if the model failed to load.", (503,),
          served_by="bentoml"),
    Route("GET", "/healthz", OPEN, "Liveness, as /livez.", (503,), served_by="bentoml"),
    Route("GET", "/readyz", OPEN, "Readiness: 503 until the model is loaded.", (503,),
          served_by="bentoml"),
    Route("GET", METRICS_PATH, METRICS, "Prometheus metrics.", served_by="bentoml"),
    Route("GET", "/docs.json", OPEN, "This OpenAPI document.", served_by="bentoml"),
    Route("GET", "/schema.json", OPEN, "BentoML's description of the service.",
          served_by="bentoml"),
    Route("GET", "/", OPEN, "The API docs page.", served_by="bentoml"),
)
# fmt: on


def scopes_by_path(routes: tuple[Route, ...]) -> dict[str, str]:
    """{path: scope}; refuses a path declared with two scopes, as auth goes by path alone."""
    scopes: dict[str, str] = {}
    for route in routes:
        if scopes.setdefault(route.path, route.scope) != route.scope:
            raise ValueError(f"{route.path} has two scopes; give every method of it one")
    return scopes


SCOPES = scopes_by_path(ROUTES)
BY_OPERATION = {(r.method, r.path): r for r in ROUTES}
NEEDS_MODEL = frozenset(r.path for r in ROUTES if r.needs_model)


def find(method: str, path: str) -> Route | None:
    """The route of `method` and `path` (either case of method), None if not declared."""
    return BY_OPERATION.get((method.upper(), path))


def route_path(scope) -> str:
    """The path the router matches: without the root path, as Starlette strips it."""
    path, root = scope["path"], scope.get("root_path", "")
    if root and path.startswith(root + "/"):
        return path[len(root) :]
    return path
