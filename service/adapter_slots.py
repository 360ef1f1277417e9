"""What the hot-swap reads off an adapter: the labels it learned, the LoRA shape that
decides whether it fits a slot, and a slot's tensors under peft's saved names."""

from __future__ import annotations


def trained_labels(manifest: dict, rows: dict) -> frozenset[str]:
    """The labels an adapter learned from: those with training samples (the manifest's
    per-label counts); an adapter published before they were recorded, its head's labels."""
    counts = manifest.get("metrics", {}).get("label_counts")
    if counts is None:
        return frozenset(rows)
    return frozenset(name for name, count in counts.items() if count)


def lora_shape(config) -> dict:
    """The LoRA settings that decide which tensors an adapter has and how it scales."""
    keys = ("r", "lora_alpha", "layers_to_transform", "use_rslora", "use_dora", "bias",
            "rank_pattern", "alpha_pattern", "modules_to_save", "fan_in_fan_out")  # fmt: skip
    shape = {key: getattr(config, key, None) for key in keys}
    targets = config.target_modules
    shape["target_modules"] = sorted(targets) if not isinstance(targets, str) else targets
    return shape


def slot_parameters(peft_model, slot: str) -> dict:
    """A slot's LoRA tensors under the names peft saves them with (slot name dropped)."""
    infix = f".{slot}."
    return {
        name.replace(infix, "."): param
        for name, param in peft_model.named_parameters()
        if infix in name
    }
