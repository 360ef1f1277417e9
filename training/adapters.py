"""What goes in an adapter folder and how it is put on a model: LoRA weights + head.

A folder holds peft's `adapter_model.safetensors` and `adapter_config.json`, our
`head.safetensors` (the linear head, with the label names in its metadata) and the
registry's `manifest.json`. Everything is safetensors or JSON: nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from training import lora_targets
from training.model import TextClassifier
from training.registry import RegistryError, check_entries

HEAD_FILE = "head.safetensors"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
log = logging.getLogger(__name__)


class AdapterMismatch(RegistryError):
    """An adapter that does not fit the base model this process runs."""


def fingerprint(encoder: torch.nn.Module) -> str:
    """sha256 of the base encoder's architecture and weights: which base model this is."""
    digest = hashlib.sha256()
    config = getattr(encoder, "config", None)
    if config is not None:
        keys = ("model_type", "hidden_size", "num_hidden_layers", "vocab_size")
        digest.update(json.dumps({k: getattr(config, k, None) for k in keys}).encode())
    # A peft-wrapped encoder: fingerprint the base part only, under the plain names.
    base = {
        name.removeprefix("base_model.model.").replace(".base_layer.", "."): tensor
        for name, tensor in encoder.state_dict().items()
        if "lora_" not in name
    }
    for name, tensor in sorted(base.items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def check_compatible(manifest: dict, version: str, base_fingerprint: str, base_id: str) -> None:
    """Refuse an adapter trained on another base model, naming both and the fix."""
    trained_on = manifest.get("base_model") or {}
    if trained_on.get("fingerprint") == base_fingerprint:
        return
    raise AdapterMismatch(
        f"adapter {version} was trained on base model {trained_on.get('id', '?')!r} "
        f"(fingerprint {str(trained_on.get('fingerprint'))[:12]}), but this service runs "
        f"{base_id!r} (fingerprint {base_fingerprint[:12]}): set LIVETUNE_BASE_MODEL back "
        "to the model it was trained on, or activate an adapter trained on this one"
    )


def attach_lora(model: TextClassifier, config, warm_start: Path | None = None) -> None:
    """Wrap the encoder with a trainable LoRA: a fresh one, or a copy of `warm_start`'s.

    A fresh one goes on the targets resolved from the encoder (training/lora_targets.py);
    peft writes them into the adapter's `adapter_config.json`, the record of what got
    LoRA. A warm start keeps the targets its adapter was trained with.
    """
    from peft import LoraConfig, PeftModel, get_peft_model

    if warm_start is not None:
        check_entries(warm_start)
        model.encoder = PeftModel.from_pretrained(model.encoder, warm_start, is_trainable=True)
        return
    targets = lora_targets.resolve(model.encoder, config.target_modules, config.lora_layers)
    log.info("LoRA on %s", targets.describe())
    lora = LoraConfig(
        target_modules=list(targets.modules),
        layers_to_transform=list(targets.layers),
        layers_pattern=targets.pattern,
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
    )
    # LoRA's A matrices start random: from the run's seed, not from whatever the process
    # drew before, so a run (and a self-training student and its teacher) is repeatable.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model.encoder = get_peft_model(model.encoder, lora)


def save_adapter(model: TextClassifier, label_names: Sequence[str], folder: Path) -> None:
    """Write the encoder's LoRA weights (peft) and the head into `folder`."""
    model.encoder.save_pretrained(folder, safe_serialization=True)
    head = model.head
    tensors = {
        "weight": head.weight.detach().float().cpu().contiguous(),
        "bias": head.bias.detach().float().cpu().contiguous(),
    }
    save_file(tensors, folder / HEAD_FILE, metadata={"labels": json.dumps(list(label_names))})


def read_head_rows(folder: Path, hidden: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The saved head as {label name: (weight row, bias)}; AdapterMismatch unless it has
    one row per label of width `hidden` (the encoder's)."""
    with safe_open(folder / HEAD_FILE, framework="pt") as saved:
        saved_labels = json.loads((saved.metadata() or {}).get("labels", "[]"))
        saved_weight, saved_bias = saved.get_tensor("weight"), saved.get_tensor("bias")
    if saved_weight.shape[0] != len(saved_labels) or saved_weight.shape[1] != hidden:
        raise AdapterMismatch(f"{folder.name}: head shape {tuple(saved_weight.shape)} does not fit")
    return {name: (saved_weight[i], saved_bias[i]) for i, name in enumerate(saved_labels)}


def read_head(
    folder: Path, label_names: Sequence[str], weight: torch.Tensor, bias: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """New head tensors: the saved rows matched by label name, `weight`/`bias` elsewhere.

    Labels the adapter has never seen keep the given (zero-shot) row, so a label added
    to the set after training still gets sensible predictions. Also returns how many
    labels were matched.
    """
    rows = read_head_rows(folder, weight.shape[1])
    weight, bias = weight.detach().clone(), bias.detach().clone()
    matched = 0
    for i, name in enumerate(label_names):
        if name in rows:
            weight[i] = rows[name][0].to(weight.dtype)
            bias[i] = rows[name][1].to(bias.dtype)
            matched += 1
    return weight, bias, matched


def load_head(model: TextClassifier, label_names: Sequence[str], folder: Path) -> int:
    """Copy the saved head rows into `model.head` (see read_head); returns labels matched."""
    head = model.head
    weight, bias, matched = read_head(folder, label_names, head.weight, head.bias)
    with torch.no_grad():
        head.weight.copy_(weight)
        head.bias.copy_(bias)
    return matched
