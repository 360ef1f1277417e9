"""The floor under /predict: BentoML's request path with no model behind it.

Same decorator settings as `service.service:Livetune` (tracing off, access log on, the
workers from FLOOR_WORKERS), same request and response types, same answer size for one
text; the handler returns a fixed prediction with a fresh id. `benchmarks/bench_http_floor.py`
serves it to measure what one HTTP request costs on this machine before any model work.
Not part of the product: nothing imports it but that benchmark.
"""

from __future__ import annotations

import os
import uuid

import bentoml

from service.schemas import LabelScore, PredictionOut, Predictions, texts_type

Texts = texts_type(64, 2_000)
TOP = [LabelScore(label=f"label_{i}", score=0.5 / (i + 1)) for i in range(5)]


@bentoml.service(
    name="livetune-floor",
    workers=int(os.environ.get("FLOOR_WORKERS", "1")),
    traffic={"timeout": 120},
    logging={"access": {"enabled": os.environ.get("FLOOR_ACCESS_LOG", "true") == "true"}},
    tracing={"excluded_urls": [".*"]},
)
class Floor:
    @bentoml.api
    async def predict(self, texts: Texts) -> Predictions:
        return [
            PredictionOut(
                label=TOP[0].label,
                score=TOP[0].score,
                top=TOP,
                prediction_id=uuid.uuid4().hex,
                adapter="base",
            )
            for _ in texts
        ]
