"""Real adapters for a base model, published to a registry without training one."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from training.adapters import attach_lora, fingerprint, save_adapter
from training.labels import Label
from training.predictor import Predictor, zero_shot_predictor
from training.registry import BASE, LocalRegistry
from training.trainer import TrainConfig


def zero_shot(model_dir, labels: Sequence[str]) -> Predictor:
    """The base model in `model_dir` with a head started from the bare label names."""
    labels = [Label(name) for name in labels]
    return zero_shot_predictor(str(model_dir), labels, template="{name}", device="cpu")


def publish_adapter(
    registry: LocalRegistry,
    model_dir,
    seed: int,
    labels: Sequence[str],
    config: TrainConfig | None = None,
) -> str:
    """A random (but real) adapter for this base model, published, not activated.

    Args:
        config: the LoRA shape (default: the head only, `lora_layers=0`).
    """
    predictor = zero_shot(model_dir, labels)
    model = predictor.model
    attach_lora(model, config or TrainConfig(lora_layers=0))
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name or name.startswith("head."):
                param.add_(torch.randn_like(param) * 0.5)
    version = registry.new_version_name()
    manifest = {
        "base_model": {"id": str(model_dir), "fingerprint": fingerprint(model.encoder)},
        "parent": BASE,
    }
    with registry.staging() as folder:
        save_adapter(model, labels, folder)
        registry.publish(folder, version, manifest)
    return version
