"""Where a run starts: the model in service continued, or a fresh LoRA (and when)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from training.adapters import AdapterMismatch, attach_lora, check_compatible, fingerprint, load_head
from training.labels import Label
from training.model import base_model_id
from training.predictor import Predictor, zero_shot_predictor
from training.registry import RegistryError
from training.trainer import TrainConfig, step_floor_sets_length

log = logging.getLogger(__name__)


@dataclass
class WarmModel:
    """The model in service (base + CURRENT adapter + head) with a trainable LoRA."""

    predictor: Predictor
    base_info: dict  # id and fingerprint of the base model, for the manifest
    warm_start: str | None  # the version it continues from, None = a fresh LoRA
    trained_on: int = 0  # corrections the adapter in service learned from (0 = zero-shot)


def continues_current(config: TrainConfig, samples: int, policy: str = "auto") -> bool:
    """Whether a run on `samples` corrections starts from the adapter in service.

    Every run trains on all the corrections, so continuing only adds passes over the
    older ones. While the step floor sets a run's length (few corrections, many epochs)
    that helps; once the epochs do, it overfits the older corrections. Banking77, one
    recipe_probe each (docs/experiments/warm-start.md): continuing scored +0.4 and +0.2
    points at 1,442 corrections (two seeds), -0.6 and -0.4 at 2,920, -0.6 and -0.7 at
    9,527, against a fresh start on the same texts.
    """
    if policy != "auto":
        return policy == "always"
    return step_floor_sets_length(config, math.ceil(samples / config.batch_size))


def warm_model(settings, registry, labels: list[Label], parent: str | None, device) -> WarmModel:
    """The zero-shot model, continued from `parent`'s adapter and head when they fit."""
    predictor = zero_shot_predictor(
        settings.base_model,
        labels,
        template=settings.label_template,
        device=str(device),
        precision=settings.precision,
        max_tokens=settings.max_tokens,  # the serving truncation: scored as served
    )
    model = predictor.model
    base_info = {"id": base_model_id(settings.base_model)}
    base_info["fingerprint"] = fingerprint(model.encoder)
    warm, trained_on = None, 0
    if parent is not None:
        try:
            adapter = registry.get(parent)
            fingerprint_, base_id = base_info["fingerprint"], base_info["id"]
            check_compatible(adapter.manifest, parent, fingerprint_, base_id)
            folder = registry.materialize(parent)
            attach_lora(model, settings.train, warm_start=folder)
            load_head(model, [label.name for label in labels], folder)
            warm = parent
            trained_on = adapter.manifest.get("metrics", {}).get("train_samples", 0)
        except (AdapterMismatch, RegistryError) as exc:
            log.warning("not warm-starting from %s: %s", parent, exc)
    if warm is None:
        attach_lora(model, settings.train)
    model.to(device)  # the LoRA weights just attached
    return WarmModel(predictor, base_info, warm, trained_on)
