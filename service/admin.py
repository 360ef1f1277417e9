"""Operator endpoints: status, adapter history, activation (rollback / roll forward).

GET routes are a small Starlette app mounted on the BentoML service (BentoML's own
APIs are POST); they reach the worker's service instance through
`bentoml.get_current_service()`.
"""

from __future__ import annotations

from dataclasses import asdict

import bentoml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from service.swap import worker_states
from training.adapters import check_compatible
from training.registry import BASE, AdapterStore, InvalidVersion, RegistryError, UnknownVersion
from training.schedule import pending_samples


def adapter_history(registry: AdapterStore) -> list[dict]:
    """Every published version, newest first, with its evidence and whether it is active."""
    history = []
    for adapter, active in registry.history():
        manifest = adapter.manifest
        metrics = manifest.get("metrics", {})
        history.append(
            {
                "version": adapter.version,
                "active": active,
                "parent": manifest.get("parent"),
                "created_at": manifest.get("created_at"),
                "metrics": metrics,
                "train_samples": metrics.get("train_samples"),
                "validation_samples": metrics.get("validation_samples"),
                "data_cursor": manifest.get("data_cursor"),
                "device": manifest.get("device"),
                "base_model": manifest.get("base_model", {}).get("id"),
            }
        )
    return history


def status(service) -> dict:
    """Base model, labels, the adapter each worker serves, pending samples, last run."""
    store = service.store
    last = store.last_run()
    serving = service.serving
    return {
        "base_model": service.base_model_id,
        "labels": [label.name for label in service.labels],
        "ready": serving is not None,
        "active_adapter": service.registry.current() or BASE,
        "workers": worker_states(service.workers_dir),
        "pending_samples": pending_samples(store),
        "samples": store.count_samples(),
        "last_training_run": asdict(last) if last else None,
    }


def activate(service, version: str) -> JSONResponse:
    """Point CURRENT at `version` ("base" = no adapter); workers follow within a second."""
    registry = service.registry
    if version == BASE:
        registry.deactivate()
        return JSONResponse({"active": BASE})
    if service.serving is None:
        return error(503, "version", "the model is not loaded yet; see /readyz")
    try:
        adapter = registry.get(version)
        check_compatible(
            adapter.manifest, version, service.serving.base_fingerprint, service.base_model_id
        )
        registry.activate(version)
    except UnknownVersion as exc:
        return error(404, "version", str(exc))
    except InvalidVersion as exc:
        return error(400, "version", str(exc))
    except RegistryError as exc:  # unsafe files, or trained on another base model
        return error(409, "version", str(exc))
    return JSONResponse({"active": version})


def error(status_code: int, field: str, message: str) -> JSONResponse:
    return JSONResponse(
        {"error": message, "detail": [{"loc": [field], "msg": message}]}, status_code=status_code
    )


async def _status(request: Request) -> JSONResponse:
    return JSONResponse(status(bentoml.get_current_service()))


async def _adapters(request: Request) -> JSONResponse:
    return JSONResponse(adapter_history(bentoml.get_current_service().registry))


routes = Starlette(
    routes=[Route("/status", _status, methods=["GET"]), Route("/adapters", _adapters)]
)
