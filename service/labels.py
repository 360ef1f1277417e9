"""The label set at run time: what a worker knows of it, and the /labels endpoints.

The store holds the set (training/store/labels.py). A worker keeps the latest set it read
and checks the version, one cheap read, before it validates corrections: so /feedback on
any replica accepts a label as soon as POST /labels has answered, and refuses a retired
one at once. The model follows the set by the watcher's poll (service/swap.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

import anyio.to_thread
import bentoml
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from service.errors import error_response, unavailable
from service.schemas import ChangedLabel, DescriptionIn, LabelIn, LabelOut, LabelsOut
from training.labels import Label
from training.store import FeedbackStore, StoreUnavailable
from training.store.labels import LabelError, LabelRecord, LabelSet, log_seed

log = logging.getLogger("livetune.labels")


class LabelCache:
    """This worker's view of the label set: the configured labels until the store has
    been reached (they seed it), then the store's latest version."""

    def __init__(self, store: FeedbackStore, configured: Sequence[Label]):
        self.store = store
        self.configured = list(configured)
        self.seeded = False
        self._lock = threading.Lock()
        self._set = LabelSet(0)  # until the store is reached: labels() are the configured ones

    def seed(self) -> LabelSet:
        """Seed the store from the configuration (once per process); StoreUnavailable if it
        cannot be reached, and the configured labels are served meanwhile."""
        if not self.seeded:
            result = self.store.seed_labels(self.configured, time.time())
            log_seed(result, "serving worker")
            self.seeded = True
            self.keep(result.label_set)
        return self._set

    def latest(self) -> LabelSet:
        """The store's set, re-read only when its version moved (StoreUnavailable if down)."""
        if not self.seeded:
            return self.seed()
        if self.store.label_set_version() != self._set.version:
            self.keep(self.store.label_set())
        return self._set

    def labels(self) -> list[Label]:
        """The active labels as last known: the configured ones before the first seed."""
        return self._set.active() if self.seeded else list(self.configured)

    def names(self) -> list[str]:
        return [label.name for label in self.labels()]

    def keep(self, label_set: LabelSet) -> None:
        """Take a set read or written here, unless a newer one is already known."""
        with self._lock:
            if label_set.version >= self._set.version:
                self._set = label_set


def label_fields(record: LabelRecord) -> dict:
    """What every answer says of a label (`ChangedLabel`'s fields)."""
    return {name: getattr(record, name) for name in ChangedLabel.model_fields}


def labels_out(label_set: LabelSet, counts: dict[str, int], trained: frozenset[str]) -> LabelsOut:
    return LabelsOut(
        version=label_set.version,
        labels=[
            LabelOut(
                **label_fields(r), corrections=counts.get(r.name, 0), trained=r.name in trained
            )
            for r in label_set.records
        ],
    )


def list_labels(service) -> LabelsOut:
    label_set = service.label_cache.latest()
    serving = service.serving
    trained = serving.trained_labels if serving is not None else frozenset()
    return labels_out(label_set, service.store.label_counts(), trained)


def one_label(label_set: LabelSet, name: str) -> dict:
    """A changed label as the answer: the label and the set's new version."""
    label = ChangedLabel(**label_fields(label_set.get(name))).model_dump(mode="json")
    return {"version": label_set.version, "label": label}


async def _body(request: Request, model: type[BaseModel]) -> BaseModel | Response:
    """The JSON body as `model`, or a 400 naming each bad field."""
    try:
        raw = await request.body()
        return model.model_validate_json(raw or b"null")
    except ValidationError as exc:
        items = [
            {"loc": ["body", *err["loc"]], "msg": err["msg"], "type": err["type"]}
            for err in exc.errors(include_url=False, include_input=False)
        ]
        message = "; ".join(f"{'.'.join(map(str, i['loc']))}: {i['msg']}" for i in items)
        return error_response(400, f"invalid body: {message}", items=items)


async def _change(name_in: str, change, *args) -> Response:
    """Run a label change in a thread: its answer, or the error it raised as ours (a bad
    name is in the body or the path, `name_in`; any other field is in the body)."""
    service = bentoml.get_current_service()
    try:
        label_set, name, status = await anyio.to_thread.run_sync(change, service, *args)
    except StoreUnavailable as exc:
        return unavailable("store", exc)
    except LabelError as exc:
        where = name_in if exc.field == "name" else "body"
        return error_response(exc.status, str(exc), [where, exc.field], exc.kind)
    service.label_cache.keep(label_set)  # this worker's /feedback knows it at once
    return JSONResponse(one_label(label_set, name), status_code=status)


def _add(service, body: LabelIn):
    label_set = service.store.add_label(body.name, body.description, time.time())
    log.info("label %r added (label set version %d)", body.name, label_set.version)
    return label_set, body.name, 201


def _describe(service, name: str, body: DescriptionIn):
    label_set = service.store.describe_label(name, body.description, time.time())
    return label_set, name, 200


def _retire(service, name: str):
    label_set = service.store.retire_label(name, time.time())
    log.info("label %r retired (label set version %d)", name, label_set.version)
    return label_set, name, 200


async def get_labels(request: Request) -> Response:
    """GET /labels."""
    try:
        answer = await anyio.to_thread.run_sync(list_labels, bentoml.get_current_service())
    except StoreUnavailable as exc:
        return unavailable("store", exc)
    return JSONResponse(answer.model_dump(mode="json"))


async def post_label(request: Request) -> Response:
    """POST /labels."""
    body = await _body(request, LabelIn)
    return body if isinstance(body, Response) else await _change("body", _add, body)


async def patch_label(request: Request) -> Response:
    """PATCH /labels/{name}."""
    body = await _body(request, DescriptionIn)
    if isinstance(body, Response):
        return body
    return await _change("path", _describe, request.path_params["name"], body)


async def retire_label(request: Request) -> Response:
    """POST /labels/{name}/retire."""
    return await _change("path", _retire, request.path_params["name"])
