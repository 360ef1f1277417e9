"""GET /review: the served predictions most worth a label, leased to the caller; and the
review page (`/ui/review`, static files in service/ui/) that works through them.

A call re-scores a bounded number of candidates with the adapter in service (those the
queue would hand out next, plus a few at random) and hands out only what that adapter
scored, so a queue scored under an older adapter catches up call by call instead of
going stale; ranking is training/review.py. An embedding ranking (`coverage`) instead
scores and embeds a random sample of candidates in one forward pass, and keeps its picks
away from what this worker handed out lately.
Mounted on the BentoML service by service/admin.py; reaches the worker's service through
`bentoml.get_current_service()`.
"""

from __future__ import annotations

import random
import threading
import uuid
from pathlib import Path

import anyio.to_thread
import bentoml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from service import metrics
from service.errors import error_response, unavailable
from service.schemas import LabelScore
from service.settings import ServiceSettings
from training import review
from training.registry import BASE
from training.store import StoreUnavailable
from training.store.review import ReviewStore, open_review_store

UI_DIR = Path(__file__).with_name("ui")
# The page holds no secret and loads nothing from another host; the API calls carry a token.
PAGE_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "cache-control": "no-cache",
}
MAX_SOURCE_CHARS = 128
OVERSELECT = 2  # pick this many times `limit`: a reviewer racing this call may lease some


class ReviewQuery(BaseModel):
    """The query of GET /review; an unknown parameter is refused, so a typo is not ignored."""

    model_config = ConfigDict(extra="forbid")

    limit: int = Field(10, ge=1, le=100, description="Items to hand out.")
    label: str | None = Field(None, min_length=1, description="Only items predicted as this.")
    source: str | None = Field(
        None, min_length=1, max_length=MAX_SOURCE_CHARS, description="The reviewer's name."
    )


class ReviewItem(BaseModel):
    prediction_id: str = Field(description="Send it back with the label to /feedback.")
    text: str
    top: list[LabelScore] = Field(description="Under `adapter`, most probable first.")
    adapter: str = Field(description="The adapter that scored `top`: the one in service.")
    served_at: float = Field(description="Unix time the prediction was served.")


class ReviewOut(BaseModel):
    items: list[ReviewItem] = Field(description="Most worth a label first; leased to the caller.")
    adapter: str = Field(description="The adapter in service.")
    labels: list[str] = Field(description="Every label it serves, for a reviewer's search.")
    lease_s: float = Field(description="Seconds the items stay leased to this caller.")
    remaining: int = Field(description="Other texts the queue could hand out now.")
    online_accuracy: float | None = Field(
        description="Share of recent linked corrections the served label got right."
    )


class ReviewQueue:
    """The queue of one worker: its store, its settings, and the service's model."""

    def __init__(self, store: ReviewStore, settings: ServiceSettings):
        self.store = store
        self.pool = settings.review_pool
        self.rescore = settings.review_rescore
        self.lease_s = settings.review_lease_s
        self.strategy = settings.review_strategy
        self.random_share = settings.review_random_share
        self.online_window = settings.online_accuracy_window
        self.rng = random.Random()
        self.recent = review.Recent(review.RECENT)

    def next_items(self, service, query: ReviewQuery) -> ReviewOut | JSONResponse:
        """Rank, re-score, lease: the answer of one GET /review."""
        serving = service.serving
        with serving.lock:  # the label set and adapter this call ranks under
            labels = [label.name for label in serving.predictor.labels]
            adapter = serving.version
        if query.label is not None and query.label not in labels:
            message = f"unknown label {query.label!r}; valid labels: {', '.join(labels[:200])}"
            return error_response(400, message, ["query", "label"], "unknown_label")
        candidates = self.store.candidates(pool=self.pool, label_count=len(labels))
        if query.label is not None:  # by the best label known before re-scoring, then after
            candidates = [c for c in candidates if c.label == query.label]
        count = query.limit * OVERSELECT
        if self.strategy in review.EMBEDDED:
            picks, adapter, vectors = self._by_embeddings(serving, candidates, count, query.label)
        else:
            candidates, adapter = self._rescore(serving, candidates)
            if query.label is not None:
                candidates = [c for c in candidates if c.label == query.label]
            # Only what the adapter in service scored is handed out; the rest waits its turn.
            scored = [c for c in candidates if c.adapter == adapter] if self.rescore else candidates
            picks = review.select(scored, count, self.strategy, self.random_share, self.rng)
        reviewer = query.source or f"anonymous-{uuid.uuid4().hex[:12]}"
        items = self.store.lease(picks, query.limit, reviewer, self.lease_s)
        if self.strategy in review.EMBEDDED:
            self.recent.add([c.text for c in items], adapter, [vectors[c.text_key] for c in items])
        metrics.record_review_served(len(items))
        agreed, total = service.store.agreement(self.online_window)
        return ReviewOut(
            items=[encode_item(c) for c in items],
            adapter=adapter,
            labels=labels,
            lease_s=self.lease_s,
            remaining=max(len(candidates) - len(items), 0),
            online_accuracy=agreed / total if total else None,
        )

    def counts(self):
        """Queue depth and where corrections came from (training/store/review.py)."""
        return self.store.counts(pool=self.pool)

    def _rescore(self, serving, candidates: list[review.Candidate]):
        """(candidates, adapter): up to `rescore` of them re-scored by the adapter in service."""
        adapter = serving.version
        chosen = review.to_rescore(candidates, adapter, self.rescore, self.strategy, self.rng)
        if not chosen:
            return candidates, adapter
        with serving.lock:  # as a batch holds it: one adapter scores every text
            adapter = serving.version
            labels = [label.name for label in serving.predictor.labels]
            probabilities = serving.predictor.probabilities([c.text for c in chosen]).tolist()
            top_k = serving.predictor.top_k
        fresh = {
            c.text_key: review.rescored(c, adapter, review.scores_of(p, labels, top_k))
            for c, p in zip(chosen, probabilities)
        }
        self.store.save_scores(list(fresh.values()))
        return [fresh.get(c.text_key, c) for c in candidates], adapter

    def _by_embeddings(self, serving, candidates, count: int, wanted: str | None):
        """(picks, adapter, {text_key: embedding}) of an EMBEDDED strategy: a random sample
        of at most `rescore` candidates scored and embedded in one forward pass, plus at
        most RECENT handed-out texts re-embedded after a swap: the bound on a call's work."""
        sample = review.to_embed(candidates, self.rescore, self.rng)
        if not sample:
            return [], serving.version, {}
        with serving.lock:  # one adapter embeds and scores every text
            adapter = serving.version
            labels = [label.name for label in serving.predictor.labels]
            vectors, probabilities = serving.predictor.embeddings_and_probabilities(
                [c.text for c in sample]
            )
            recent = self.recent.vectors(adapter, serving.predictor.embeddings)
            top_k = serving.predictor.top_k
        fresh = [
            review.rescored(c, adapter, review.scores_of(p, labels, top_k))
            for c, p in zip(sample, probabilities.tolist())
        ]
        self.store.save_scores(fresh)
        keep = [i for i, c in enumerate(fresh) if wanted is None or c.label == wanted]
        vectors = vectors.numpy()[keep]
        fresh = [fresh[i] for i in keep]
        picks = review.select(fresh, count, self.strategy, self.random_share, self.rng,
                              vectors=vectors, labeled=recent,
                              uncertainty=adapter != BASE)  # fmt: skip
        return picks, adapter, {c.text_key: v for c, v in zip(fresh, vectors)}


def encode_item(candidate: review.Candidate) -> ReviewItem:
    return ReviewItem(
        prediction_id=candidate.prediction_id,
        text=candidate.text,
        top=[LabelScore(label=label, score=score) for label, score in candidate.top],
        adapter=candidate.adapter,
        served_at=candidate.served_at,
    )


_queue: ReviewQueue | None = None
_queue_lock = threading.Lock()


def queue_of(service) -> ReviewQueue:
    """This worker's queue, opened on first use next to the service's store."""
    global _queue
    with _queue_lock:
        if _queue is None:
            settings = ServiceSettings()
            store = open_review_store(
                service.store, max_age_s=settings.prediction_retention_hours * 3600
            )
            _queue = ReviewQueue(store, settings)
        return _queue


def parse_query(request: Request) -> ReviewQuery | JSONResponse:
    """The query, or a 400 naming each bad parameter (`loc` ["query", name])."""
    params = dict(request.query_params)
    try:
        return ReviewQuery.model_validate(params)
    except ValidationError as exc:
        items = [
            {"loc": ["query", *e["loc"]], "msg": e["msg"], "type": e["type"]}
            for e in exc.errors(include_url=False, include_context=False, include_input=False)
        ]
        return error_response(400, f"{len(items)} invalid query parameter(s)", items=items)


async def review_items(request: Request) -> JSONResponse:
    """GET /review."""
    query = parse_query(request)
    if isinstance(query, JSONResponse):
        return query
    service = bentoml.get_current_service()
    try:  # in a thread: the store may take seconds, the re-scoring holds the model's lock
        answer = await anyio.to_thread.run_sync(queue_of(service).next_items, service, query)
    except StoreUnavailable as exc:
        return unavailable("store", exc)
    if isinstance(answer, JSONResponse):
        return answer
    return JSONResponse(answer.model_dump(mode="json"))


async def page(request: Request) -> FileResponse:
    """The review page."""
    return FileResponse(UI_DIR / "review.html", headers=PAGE_HEADERS)


# Under an open prefix (service/routes.py OPEN_PREFIXES): the page and its files.
UI_PREFIX = "/ui"
ui = Starlette(
    routes=[
        Route("/review", page, methods=["GET"]),
        Mount("/", app=StaticFiles(directory=UI_DIR)),
    ]
)
