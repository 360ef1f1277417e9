"""The BentoML service: wires settings and the predictor together and declares the endpoints."""

from __future__ import annotations

import logging
import os
import threading
import uuid

import anyio.to_thread
import bentoml
import torch
from bentoml.exceptions import ServiceUnavailable

from service import admin, metrics, store_metrics
from service.auth import BearerAuth
from service.batching import Batcher, Overloaded
from service.errors import error_response, unavailable
from service.feedback import resolve_samples
from service.labels import LabelCache
from service.limits import BodySizeLimit, JSONBodies, ModelGate, PlainPaths
from service.logs import use_bentoml_logging
from service.openapi import OpenAPIDocs
from service.prediction_log import PredictionLog
from service.routes import NEEDS_MODEL
from service.schemas import (
    Activated,
    FeedbackOut,
    LabelScore,
    PredictionOut,
    Predictions,
    TrainAccepted,
    feedback_types,
    texts_type,
)
from service.settings import ServiceSettings, worker_threads
from service.swap import ServingModel
from service.trainer import Trainer, gpu_resources
from service.watcher import Watcher
from training.adapters import fingerprint
from training.backends import open_backends
from training.model import base_model_id
from training.predictor import Prediction, zero_shot_predictor
from training.settings import load_settings
from training.store import PredictionRecord, StoreUnavailable
from training.store.labels import LabelSet

os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
log = logging.getLogger("livetune")
# Read at import: BentoML takes the decorator's arguments and the request types here.
settings = load_settings(ServiceSettings)
Texts = texts_type(settings.max_texts_per_request, settings.max_text_chars)
SampleIn, Samples = feedback_types(settings.max_feedback_samples, settings.max_text_chars)
READY_WAIT_S = 60.0
SWAP_POLL_S = 0.5  # every worker converges on a new CURRENT within about this long


@bentoml.service(
    name="livetune",
    workers=settings.workers,
    resources=gpu_resources(settings.gpu_fraction),
    traffic={"timeout": 120},
    endpoints={"livez": "/livez", "readyz": "/readyz"},
    logging={"access": {"enabled": settings.access_log}},
    # BentoML's OpenTelemetry middleware makes a span per request even when nothing is
    # exported (a py-spy profile at peak load: 10-20% of the worker's GIL time); an
    # excluded URL skips it, so off means every URL.
    tracing={} if settings.tracing else {"excluded_urls": [".*"]},
)
class Livetune:
    """Text classification on a pretrained encoder plus the current LoRA adapter."""

    # The Trainer runs in its own process within the same `bentoml serve`.
    trainer = bentoml.depends(Trainer) if settings.trainer else None

    def __init__(self) -> None:
        use_bentoml_logging()
        backends = open_backends(settings)
        self.store = backends.store
        # The configured labels seed the store's label set, which then rules (/labels).
        self.label_cache = LabelCache(self.store, settings.label_set())
        self.registry = backends.registry
        self.prediction_log = PredictionLog(backends.predictions)
        self.worker_stale_s = settings.worker_stale_s
        self.base_model_id = base_model_id(settings.base_model)
        self.serving: ServingModel | None = None
        # Our own batching, with a bounded wait, instead of BentoML's adaptive batching.
        self.batcher = Batcher(
            lambda texts: self._ready_serving().predict(texts),
            max_rows=settings.max_batch_size,
            max_delay_s=settings.max_queue_delay_ms / 1000,
            max_queued_rows=settings.max_queued_texts,
        )
        self.load_error: BaseException | None = None
        self._loaded = threading.Event()
        # Loading takes seconds: do it off the event loop so /livez answers meanwhile.
        threading.Thread(target=self._load, name="livetune-load", daemon=True).start()

    def _load(self) -> None:
        try:
            torch.set_num_threads(worker_threads(settings.workers, settings.threads))
            try:
                label_set = self.label_cache.seed()
            except StoreUnavailable as exc:  # serve the configured set; the watcher syncs
                log.warning("cannot read the label set yet; serving the configured one: %s", exc)
                label_set = LabelSet(0)
            labels = self.label_cache.labels()
            predictor = zero_shot_predictor(
                settings.base_model,
                labels,
                template=settings.label_template,
                device=settings.device,
                precision=settings.precision,
                max_tokens=settings.max_tokens,
                batch_size=settings.inference_batch_size,
                top_k=settings.top_k,
            )
            serving = ServingModel(
                predictor,
                label_set,
                self.registry,
                base_fingerprint=fingerprint(predictor.model.encoder),
                base_id=self.base_model_id,
                template=settings.label_template,
                merge=settings.merge_adapter,
            )
            # Follow CURRENT before declaring ready, so the first answer already uses it.
            Watcher(serving, self.store, self.label_cache, SWAP_POLL_S).start()
            self.serving = serving
            log.info("model ready on %s with %d labels (set version %d), adapter %s",
                     predictor.device, len(labels), label_set.version, serving.version)  # fmt: skip
        except BaseException as exc:  # reported by /livez, so the orchestrator restarts us
            log.exception("model failed to load")
            self.load_error = exc
        finally:
            self._loaded.set()

    def __is_ready__(self) -> bool:
        return self.serving is not None

    def __is_alive__(self) -> bool:
        return self.load_error is None

    @bentoml.api
    async def predict(self, texts: Texts) -> Predictions:
        """Classify texts: label, score, top-k alternatives, prediction id and adapter version."""
        try:
            predictions, version, _ = await self.batcher.submit(texts)
        except Overloaded as exc:
            return error_response(503, f"this worker is overloaded: {exc}; retry", [], "overloaded")
        answers = [encode_prediction(p, version) for p in predictions]
        metrics.record_predictions([a.label for a in answers], [a.score for a in answers], version)
        if settings.log_predictions:
            self._remember(texts, answers)
        return answers

    # Handlers that wait on the store or the registry are async and wait in threads of
    # their own: BentoML runs sync handlers on one thread per worker (its `threads`
    # setting), so a store that takes seconds to fail would otherwise hold up /predict.
    @bentoml.api
    async def feedback(self, samples: Samples) -> FeedbackOut:
        """Store labeled corrections, by text or by prediction_id; all or nothing, durable."""
        return await anyio.to_thread.run_sync(self._store_feedback, samples)

    @bentoml.api(route="/adapters/activate")
    async def activate(self, version: str) -> Activated:
        """Make `version` the active adapter ("base" = none): rollback or roll forward."""
        return await anyio.to_thread.run_sync(admin.activate, self, version)

    def _store_feedback(self, samples) -> FeedbackOut:
        self.prediction_log.flush()  # ids this worker just served must be findable
        try:
            label_set = self.label_cache.latest()  # a label added a moment ago counts
            resolved, errors = resolve_samples(samples, label_set, self.store)
            if errors:
                message = f"{len(errors)} invalid sample(s); nothing was stored"
                return error_response(400, message, items=errors)
            result = self.store.add_samples(resolved)
        except StoreUnavailable as exc:  # never a false acknowledgement, never a 500
            return unavailable("store", exc)
        metrics.record_feedback(resolved, result.new)
        return FeedbackOut(
            ids=result.ids, stored=len(result.ids) - result.duplicates, duplicates=result.duplicates
        )

    @bentoml.api(route="/train")
    def train(self, ctx: bentoml.Context) -> TrainAccepted:
        """Start a training run now (202); 409 if one is already running or the trainer is off."""
        if self.trainer is None:
            message, kind = "the trainer is disabled (LIVETUNE_TRAINER=false)", "trainer_disabled"
        elif self.trainer.train()["already_running"]:
            message, kind = "a training run is already in progress", "training_in_progress"
        else:
            ctx.response.status_code = 202
            return TrainAccepted(accepted=True)
        # A handler that takes ctx gets ctx's status, even on a Response it returns.
        ctx.response.status_code = 409
        return error_response(409, message, kind=kind)

    def _remember(self, texts: list[str], answers: list[PredictionOut]) -> None:
        """Queue the batch for the prediction log, so feedback can cite a prediction_id."""
        self.prediction_log.add(
            [
                PredictionRecord(
                    a.prediction_id,
                    text,
                    a.label,
                    a.score,
                    a.adapter,
                    top=tuple((t.label, t.score) for t in a.top),
                )
                for text, a in zip(texts, answers)
            ]
        )

    def wait_ready(self, timeout: float) -> bool:
        """Whether the model is loaded, waiting up to `timeout` seconds for it."""
        return self._loaded.wait(timeout) and self.serving is not None

    def _ready_serving(self) -> ServingModel:
        """The serving model. ModelGate answered 503 already if it is not loaded: this only
        guards a call that did not pass through it."""
        if not self.wait_ready(READY_WAIT_S):
            raise ServiceUnavailable("the model is not loaded yet; see /readyz")
        return self.serving


def encode_prediction(prediction: Prediction, adapter: str) -> PredictionOut:
    """One /predict answer item, with a fresh prediction id."""
    return PredictionOut(
        label=prediction.label,
        score=prediction.score,
        top=[LabelScore(label=label, score=score) for label, score in prediction.top],
        prediction_id=uuid.uuid4().hex,
        adapter=adapter,
    )


def model_ready(timeout: float) -> bool:
    """Whether this worker's model is loaded, waiting up to `timeout` seconds (ModelGate)."""
    return bentoml.get_current_service().wait_ready(timeout)


# Outermost first: refuse a request without the right token before buffering its body.
tokens = settings.token_digests()
Livetune.add_asgi_middleware(BearerAuth, tokens=tokens, metrics_auth=settings.metrics_auth)
Livetune.add_asgi_middleware(
    OpenAPIDocs, service=Livetune, secured=any(tokens.values()), metrics_auth=settings.metrics_auth
)
Livetune.add_asgi_middleware(PlainPaths)
Livetune.add_asgi_middleware(JSONBodies)
Livetune.add_asgi_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
Livetune.add_asgi_middleware(
    store_metrics.RefreshOnScrape, online_window=settings.online_accuracy_window
)
Livetune.add_asgi_middleware(
    ModelGate, paths=NEEDS_MODEL, is_ready=model_ready, wait_s=READY_WAIT_S
)
Livetune.mount_asgi_app(admin.routes, path="/")
