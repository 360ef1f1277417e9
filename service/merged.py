"""The served adapter merged into the weights: no LoRA matmuls per forward.

At a swap, each targeted layer's base weight plus the adapter's delta (peft's own
`get_delta_weight`: B A x scale) is written, off the request path, into the free one of
two buffer sets; switching the layers to it under the serving lock is a pointer swap. The
base weights are never written, so going back to the base model (a rollback, or embedding a new
label's prompt as training would) is a pointer swap too. The LoRA layers stay in the
model, disabled: peft still loads and checks the adapter, it only never runs it.

Why not peft's `merge_adapter`: it adds the delta in place, ~250 ms on MiniLM that no
batch could run through, and undoing it by subtraction drifts the base weights.
`benchmarks/bench_serving_model.py` measures the gain and the agreement with unmerged
serving.
"""

from __future__ import annotations

import torch

Weights = dict[str, torch.Tensor]  # LoRA layer name -> the weight its base layer runs


class MergedWeights:
    """The base weights of every LoRA-wrapped layer of one peft model, the merged weights
    it serves now, and a second set of buffers the next merge writes into."""

    def __init__(self) -> None:
        self.base: Weights = {}  # each layer's own weight, as loaded; never written
        self.live: Weights = {}
        # Two buffer sets, one served and one free: a merge writes into the free one, so a
        # swap allocates nothing and memory stays flat (one extra copy of the targets).
        self._buffers: tuple[Weights, Weights] = ({}, {})
        self._layers: dict = {}  # name -> LoRA layer, as of the last merge

    @torch.no_grad()
    def merge(self, peft_model, slot: str) -> Weights:
        """Weights with adapter `slot` merged in (the base weight where it has no delta)."""
        self._layers = dict(_lora_layers(peft_model))
        free = self._buffers[1] if self._serves(self._buffers[0]) else self._buffers[0]
        merged = {}
        for name, layer in self._layers.items():
            # A layer's weight is captured the first time it is seen wrapped, before any
            # swap could have replaced it: until then it holds what the base model loaded.
            base = self.base.setdefault(name, layer.get_base_layer().weight.data)
            if slot not in _adapters(layer):
                merged[name] = base
                continue
            if layer.use_dora.get(slot):
                raise ValueError(
                    "a DoRA adapter cannot be merged into the weights;"
                    " serve it unmerged with LIVETUNE_MERGE_ADAPTER=false"
                )
            buffer = free.get(name)
            if buffer is None or buffer.shape != base.shape or buffer.dtype != base.dtype:
                buffer = free[name] = torch.empty_like(base)
            merged[name] = torch.add(base, layer.get_delta_weight(slot).to(base.dtype), out=buffer)
        return merged

    def load(self, peft_model, weights: Weights) -> None:
        """Make the layers run `weights`, with LoRA itself off; call under the serving lock."""
        layers = self._layers or dict(_lora_layers(peft_model))
        for name, weight in weights.items():
            layers[name].get_base_layer().weight.data = weight
        if not all(layer.disable_adapters for layer in layers.values()):
            peft_model.base_model.disable_adapter_layers()
        self.live = weights

    def load_base(self, peft_model) -> Weights:
        """Run the base weights; returns what ran before, for `load` to restore."""
        before = self.live
        self.load(peft_model, dict(self.base))
        return before

    def _serves(self, buffers: Weights) -> bool:
        return any(self.live.get(name) is tensor for name, tensor in buffers.items())


def _lora_layers(peft_model):
    from peft.tuners.lora import LoraLayer

    return [(n, m) for n, m in peft_model.named_modules() if isinstance(m, LoraLayer)]


def _adapters(layer) -> set[str]:
    return set(layer.lora_A) | set(layer.lora_embedding_A)
