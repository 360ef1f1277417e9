"""Every route livetune serves, declared once.

Auth (service/auth.py) takes each path's token scope from here, /docs.json
(service/openapi.py) its summaries, statuses and mounted routes, service/admin.py builds
its GET routes from it, and the tests check it against what the server really serves.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from service.metrics import METRICS_PATH
from service.review import ReviewOut
from service.schemas import (
    AdapterOut,
    DescriptionIn,
    LabelChanged,
    LabelIn,
    LabelsOut,
    StatusOut,
)
from service.settings import TOKEN_SCOPES

PREDICT, FEEDBACK, ADMIN = TOKEN_SCOPES
OPEN = "open"  # never a token: orchestrators call probes bare, and docs hold no secrets
METRICS = "metrics"  # open, or any valid token with LIVETUNE_METRICS_AUTH=true
# The docs page's static files, and the review page (service/review.py: it holds no
# secret, its API calls carry the token); any other path not in the table needs admin.
OPEN_PREFIXES = ("/static_content/", "/assets/", "/ui/")


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
    body: Any = None  # the request body's type, for mounted routes that take one
    needs_model: bool = False  # 503 in our error shape until the model is loaded
    # `path` as a pattern: a `{param}` matches one or more characters, "/" and line breaks
    # included, since a label name may hold "/" and a client may send anything.
    pattern: re.Pattern = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        parts = re.split(r"\{\w+\}", self.path)
        regex = r"[\s\S]+".join(re.escape(part) for part in parts)
        object.__setattr__(self, "pattern", re.compile(regex))

    @property
    def templated(self) -> bool:
        return "{" in self.path

    def matches(self, path: str) -> bool:
        return self.pattern.fullmatch(path) is not None


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
    Route("GET", "/labels", PREDICT,
          "The label set: every label, its state, corrections, and whether it is trained.",
          (503,), served_by="mounted", answer=LabelsOut),
    Route("POST", "/labels", ADMIN, "Add a label; every worker predicts it within 2 s.",
          (400, 409, 413, 415, 503), ok=201, served_by="mounted", answer=LabelChanged,
          body=LabelIn),
    Route("PATCH", "/labels/{name}", ADMIN,
          "Change a label's description (its zero-shot text until it is trained).",
          (400, 404, 409, 413, 415, 503), served_by="mounted", answer=LabelChanged,
          body=DescriptionIn),
    Route("POST", "/labels/{name}/retire", ADMIN,
          "Retire a label: no longer predicted nor accepted; its corrections stay.",
          (404, 409, 413, 415, 503), served_by="mounted", answer=LabelChanged),
    Route("GET", "/review", FEEDBACK,
          "The served predictions most worth a label, most useful first, leased to the caller.",
          (503,), served_by="mounted", answer=ReviewOut, needs_model=True),
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


BY_OPERATION = {(r.method, r.path): r for r in ROUTES}
TEMPLATED = tuple(r for r in ROUTES if r.templated)
NEEDS_MODEL = frozenset(r.path for r in ROUTES if r.needs_model)


def find(method: str, path: str) -> Route | None:
    """The route that serves `method` (either case; HEAD as GET) on `path`, a concrete
    path or the table's own template; None if none is declared."""
    method = method.upper()
    method = "GET" if method == "HEAD" else method
    route = BY_OPERATION.get((method, path))
    if route is not None:
        return route
    # Literal paths first: "/labels/x/retire" is the retire route, not PATCH's "{name}".
    return next((r for r in TEMPLATED if r.method == method and r.matches(path)), None)


def route_path(scope) -> str:
    """The path the router matches: without the root path, as Starlette strips it."""
    path, root = scope["path"], scope.get("root_path", "")
    if root and path.startswith(root + "/"):
        return path[len(root) :]
    return path
