"""Hot-swap: a serving worker switches to the version the registry's CURRENT names.

The watcher (service/watcher.py) polls CURRENT; a new version is materialized and loaded
into the inactive one of two peft adapter slots off the request path, then switched in under the
same lock every batch holds, so a batch is served entirely by one version and reports
it. The previous version's slot is reused for the next one, so memory stays flat. A
version that fails to load is remembered, reported, and the current one keeps serving.

peft's `hotswap_adapter` is not used: it fails on adapters saved with a head.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from service import metrics
from training.adapters import ADAPTER_WEIGHTS, check_compatible, read_head
from training.predictor import Prediction, Predictor
from training.registry import BASE, AdapterStore

log = logging.getLogger("livetune.swap")
SLOTS = ("slot-a", "slot-b")  # peft adapter names: the active one and the one being filled


@dataclass
class SwapState:
    """What a worker serves and how its swaps went; written for /status and metrics."""

    pid: int
    adapter: str = BASE
    since: float = field(default_factory=time.time)
    swaps: int = 0
    failed_swaps: int = 0
    last_error: str | None = None
    last_swap_s: float | None = None
    poll_failures: int = 0  # polls of CURRENT that could not reach the registry
    last_poll_error: str | None = None


class ServingModel:
    """A Predictor plus the adapter version it serves; one lock orders batches and swaps."""

    def __init__(
        self,
        predictor: Predictor,
        label_names: Sequence[str],
        registry: AdapterStore,
        base_fingerprint: str,
        base_id: str,
    ):
        self.predictor = predictor
        self.label_names = list(label_names)
        self.registry = registry
        self.base_fingerprint = base_fingerprint
        self.base_id = base_id
        self.lock = threading.Lock()
        head = predictor.model.head
        self.base_head = (head.weight.detach().clone(), head.bias.detach().clone())
        self.state = SwapState(pid=os.getpid())
        metrics.record_serving(self.state.adapter)
        self.failed: dict[str, str] = {}  # version -> why it could not be loaded
        self.active_slot: str | None = None

    @property
    def version(self) -> str:
        return self.state.adapter

    def predict(self, texts: Sequence[str]) -> tuple[list[Prediction], str]:
        """Predictions for a batch and the one adapter version that produced all of them."""
        with self.lock:
            return self.predictor.predict(texts), self.state.adapter

    def follow(self, target: str | None) -> bool:
        """Serve `target` (None = the base model) unless already served or known bad."""
        target = target or BASE
        if target == self.state.adapter or target in self.failed:
            return False
        previous, started = self.state.adapter, time.perf_counter()
        try:
            self._switch_to_base() if target == BASE else self._switch_to(target)
        except Exception as exc:  # a bad adapter must never take serving down
            self.failed[target] = f"{type(exc).__name__}: {exc}"
            self.state.failed_swaps += 1
            metrics.record_swap_failure()
            self.state.last_error = f"{target}: {self.failed[target]}"
            log.error("could not load adapter %s; still serving %s: %s",
                      target, self.state.adapter, exc)  # fmt: skip
            return False
        self.state.swaps += 1
        self.state.last_swap_s = time.perf_counter() - started
        metrics.record_swap(previous, target, self.state.last_swap_s)
        self.state.since = time.time()
        log.info("now serving adapter %s (swap %.0f ms)", target, 1e3 * self.state.last_swap_s)
        return True

    def _switch_to(self, version: str) -> None:
        adapter = self.registry.get(version)  # name, files and symlinks checked
        check_compatible(adapter.manifest, version, self.base_fingerprint, self.base_id)
        folder = self.registry.materialize(version)
        weight, bias, _ = read_head(folder, self.label_names, *self.base_head)
        model = self.predictor.model
        from peft import PeftModel

        if not isinstance(model.encoder, PeftModel):
            # The first adapter wraps the encoder in place, so no batch may run meanwhile.
            with self.lock:
                model.encoder = PeftModel.from_pretrained(
                    model.encoder, folder, adapter_name=SLOTS[0]
                ).eval()
                self._activate(version, weight, bias, SLOTS[0])
            return
        spare = SLOTS[1] if self.active_slot == SLOTS[0] else SLOTS[0]
        self._fill(model.encoder, spare, folder)  # inactive: batches are unaffected
        with self.lock:
            model.encoder.base_model.enable_adapter_layers()
            model.encoder.set_adapter(spare)
            self._activate(version, weight, bias, spare)

    def _fill(self, peft_model, slot: str, path: Path) -> None:
        """Put the adapter at `path` into the inactive `slot`.

        Two slots are double buffers: when the slot already holds an adapter of the same
        shape, the new weights are copied into its tensors (a few ms), instead of peft
        building new LoRA modules (~100 ms of CPU and GIL, which showed up as latency).
        """
        from peft import LoraConfig
        from safetensors.torch import load_file

        config = LoraConfig.from_pretrained(path)
        loaded = peft_model.peft_config.get(slot)
        if loaded is not None and _shape(loaded) == _shape(config):
            weights = load_file(path / ADAPTER_WEIGHTS)
            params = _slot_parameters(peft_model, slot)
            if set(weights) == set(params):
                with torch.no_grad():
                    for key, tensor in weights.items():
                        params[key].copy_(tensor)
                return
        if loaded is not None:
            peft_model.delete_adapter(slot)
        peft_model.load_adapter(path, adapter_name=slot, is_trainable=False)
        peft_model.eval()  # no LoRA dropout

    def _switch_to_base(self) -> None:
        from peft import PeftModel

        model = self.predictor.model
        with self.lock:
            if isinstance(model.encoder, PeftModel):
                model.encoder.base_model.disable_adapter_layers()
            self._activate(BASE, *self.base_head)

    def _activate(
        self, version: str, weight: torch.Tensor, bias: torch.Tensor, slot: str | None = None
    ) -> None:
        head = self.predictor.model.head
        with torch.no_grad():
            head.weight.copy_(weight.to(head.weight.device))
            head.bias.copy_(bias.to(head.bias.device))
        self.state.adapter = version
        if slot is not None:
            self.active_slot = slot


def _shape(config) -> dict:
    """The LoRA settings that decide which tensors an adapter has and how it scales."""
    keys = ("r", "lora_alpha", "layers_to_transform", "use_rslora", "use_dora", "bias",
            "rank_pattern", "alpha_pattern", "modules_to_save", "fan_in_fan_out")  # fmt: skip
    shape = {key: getattr(config, key, None) for key in keys}
    targets = config.target_modules
    shape["target_modules"] = sorted(targets) if not isinstance(targets, str) else targets
    return shape


def _slot_parameters(peft_model, slot: str) -> dict:
    """A slot's LoRA tensors under the names peft saves them with (slot name dropped)."""
    infix = f".{slot}."
    return {
        name.replace(infix, "."): param
        for name, param in peft_model.named_parameters()
        if infix in name
    }
