"""Where a run starts: the model in service continued, or a fresh LoRA (and when)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from training.predictor import Predictor
from training.trainer import TrainConfig, step_floor_sets_length


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
