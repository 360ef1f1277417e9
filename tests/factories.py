"""Real adapters for tests and benchmarks: random LoRA weights, published in a registry."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from service.swap import BASE
from training.adapters import attach_lora, fingerprint, save_adapter
from training.labels import Label
from training.model import TextClassifier, load_encoder
from training.predictor import Predictor
from training.registry import AdapterRegistry
from training.trainer import TrainConfig

TOY_LABELS = ["lost_card", "exchange_rate", "refund_request"]
TEXTS = ["i lost my card", "exchange rate euro", "refund my money please", "hello world"]


def zero_shot(model_dir, labels: Sequence[str] = TOY_LABELS) -> Predictor:
    encoder, tokenizer = load_encoder(str(model_dir))
    labels = [Label(name) for name in labels]
    predictor = Predictor(TextClassifier(encoder, len(labels)), tokenizer, labels, device="cpu")
    predictor.init_head_from_labels("{name}")
    return predictor


def publish_adapter(
    registry: AdapterRegistry,
    model_dir,
    seed: int,
    labels: Sequence[str] = TOY_LABELS,
    config: TrainConfig = TrainConfig(lora_layers=0),
) -> str:
    """A random (but real) adapter for this base model, published, not activated."""
    predictor = zero_shot(model_dir, labels)
    model = predictor.model
    attach_lora(model, config)
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
