"""Operator endpoints: status, adapter history, activation (rollback / roll forward).

GET routes are a small Starlette app mounted on the BentoML service (BentoML's own
APIs are POST), built from the route table (service/routes.py); they reach the worker's
service instance through `bentoml.get_current_service()`.
"""

from __future__ import annotations

import re
from dataclasses import asdict

import anyio.to_thread
import bentoml
from starlette.applications import Starlette
from starlette.convertors import PathConvertor, register_url_convertor
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from service import labels, review
from service.errors import error_response, unavailable
from service.routes import ROUTES
from service.schemas import Activated, AdapterOut, StatusOut
from service.watcher import worker_states
from training.adapters import check_compatible
from training.registry import (
    BASE,
    AdapterStore,
    InvalidVersion,
    RegistryError,
    RegistryUnavailable,
    UnknownVersion,
)
from training.schedule import pending_samples
from training.store import StoreUnavailable


def adapter_history(registry: AdapterStore) -> list[AdapterOut]:
    """Every published version, newest first, with its evidence and whether it is active."""
    history = []
    for adapter, active in registry.history():
        manifest = adapter.manifest
        metrics = manifest.get("metrics", {})
        history.append(
            AdapterOut(
                version=adapter.version,
                active=active,
                parent=manifest.get("parent"),
                created_at=manifest.get("created_at"),
                metrics=metrics,
                train_samples=metrics.get("train_samples"),
                validation_samples=metrics.get("validation_samples"),
                data_cursor=manifest.get("data_cursor"),
                device=manifest.get("device"),
                base_model=manifest.get("base_model", {}).get("id"),
                gate=manifest.get("gate"),
                seen=manifest.get("seen"),
            )
        )
    return history


def status(service) -> StatusOut:
    """Base model, labels, the adapter each worker serves, pending samples, last run."""
    store = service.store
    last = store.last_run()
    try:  # an object store that is down must not hide the rest, poll failures included
        active, registry_error = service.registry.current() or BASE, None
    except RegistryError as exc:
        active, registry_error = None, str(exc)
    serving = service.serving
    served = serving.state if serving is not None else None
    return StatusOut(
        base_model=service.base_model_id,
        labels=serving.label_names if serving is not None else service.label_cache.names(),
        label_set_version=served.label_set_version if served is not None else 0,
        ready=serving is not None,
        active_adapter=active,
        registry_error=registry_error,
        workers=worker_states(store, service.worker_stale_s),
        pending_samples=pending_samples(store),
        samples=store.count_samples(),
        last_training_run=asdict(last) if last else None,
    )


def activate(service, version: str) -> Activated | Response:
    """Point CURRENT at `version` ("base" = no adapter); workers follow within a second."""
    registry = service.registry
    if version == BASE:
        registry.deactivate()
        return Activated(active=BASE)
    if service.serving is None:
        reason = "the model is not loaded yet; see /readyz"
        return error_response(503, reason, ["version"], "not_ready")
    try:
        adapter = registry.get(version)
        check_compatible(
            adapter.manifest, version, service.serving.base_fingerprint, service.base_model_id
        )
        registry.activate(version)
    except RegistryUnavailable as exc:
        return unavailable("registry", exc)
    except UnknownVersion as exc:
        return error_response(404, str(exc), ["version"], "unknown_version")
    except InvalidVersion as exc:
        return error_response(400, str(exc), ["version"], "invalid_version")
    except RegistryError as exc:  # unsafe files, or trained on another base model
        return error_response(409, str(exc), ["version"], "adapter_refused")
    return Activated(active=version)


async def _status(request: Request) -> JSONResponse:
    """GET /status."""
    try:  # in a thread: the store may take seconds to answer, or to fail
        answer = await anyio.to_thread.run_sync(status, bentoml.get_current_service())
    except StoreUnavailable as exc:
        return unavailable("store", exc)
    return JSONResponse(answer.model_dump(mode="json"))


async def _adapters(request: Request) -> JSONResponse:
    """GET /adapters."""
    try:
        registry = bentoml.get_current_service().registry
        history = await anyio.to_thread.run_sync(adapter_history, registry)
    except RegistryUnavailable as exc:
        return unavailable("registry", exc)
    return JSONResponse([adapter.model_dump(mode="json") for adapter in history])


HANDLERS = {
    ("GET", "/status"): _status,
    ("GET", "/adapters"): _adapters,
    ("GET", "/labels"): labels.get_labels,
    ("POST", "/labels"): labels.post_label,
    ("PATCH", "/labels/{name}"): labels.patch_label,
    ("POST", "/labels/{name}/retire"): labels.retire_label,
    ("GET", "/review"): review.review_items,
}


class LastSegments(PathConvertor):
    """A path parameter that may hold "/" (a label name may) but does not end in the
    literal tail of another route under it: "/labels/x/retire" is the retire route's,
    so PATCH on it is 405, not a PATCH of a label named "x/retire"."""

    # The tails after a parameter in the table ("/retire"), taken from it.
    tails = sorted({re.split(r"\{\w+\}", r.path)[-1] for r in ROUTES if r.templated} - {""})
    regex = rf"(?!.*(?:{'|'.join(map(re.escape, tails))})$).+" if tails else ".+"


register_url_convertor("last", LastSegments())


def starlette_path(path: str) -> str:
    """The table's `{param}` as Starlette's: `{param:path}` inside a path, `{param:last}`
    at its end (see LastSegments)."""
    path = re.sub(r"\{(\w+)\}$", r"{\1:last}", path)
    return re.sub(r"\{(\w+)\}(?=/)", r"{\1:path}", path)


def by_method(path: str, methods: list[str]):
    """One endpoint for every method of `path`: a path of two routes is one Starlette
    route, so its 405 names all of their methods in Allow."""
    handlers = {method: HANDLERS[method, path] for method in methods}

    async def endpoint(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await handlers[method](request)

    return endpoint


# A mounted route in the table without a handler here fails at import, not at a request.
MOUNTED: dict[str, list[str]] = {}
for declared in ROUTES:
    if declared.served_by == "mounted":
        MOUNTED.setdefault(declared.path, []).append(declared.method)


async def http_error(request: Request, exc: HTTPException) -> Response:
    """Starlette's own 404 (no route) and 405 (a route, not this method) in our error
    shape, not its plain text; a 405 keeps its Allow header."""
    kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    message = f"{request.method} {request.url.path!r}: {exc.detail.lower()}"
    answer = error_response(exc.status_code, message, ["path"], kind)
    answer.headers.update(exc.headers or {})
    return answer


routes = Starlette(
    exception_handlers={HTTPException: http_error},
    routes=[
        Route(starlette_path(path), by_method(path, methods), methods=methods)
        for path, methods in MOUNTED.items()
    ]
    # The review page and its files, under an open prefix of the table.
    + [Mount(review.UI_PREFIX, app=review.ui)],
)
