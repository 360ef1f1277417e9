"""Hot-swap: a serving worker switches to the version the registry's CURRENT names, and
to the label set the store holds.

The watcher (service/watcher.py) polls CURRENT; a new version is materialized and loaded
into the inactive one of two peft adapter slots off the request path, then switched in under the
same lock every batch holds, so a batch is served entirely by one version and reports
it. The previous version's slot is reused for the next one, so memory stays flat. A
version that fails to load is remembered, reported, and the current one keeps serving.
By default the adapter is also merged into a copy of the targeted weights off the
request path (service/merged.py), and the switch swaps those weights in instead of
turning LoRA on.

The head is assembled by label name: for each active label, the adapter's trained row,
or else its zero-shot row (the embedding of its description or name, by the base
encoder, as training starts it). A new label set (the watcher polls its version) gets a
new head the same way, under the same lock: one batch, one label-set version.

peft's `hotswap_adapter` is not used: it fails on adapters saved with a head.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from service import metrics
from service.adapter_slots import lora_shape, slot_parameters, trained_labels
from service.merged import MergedWeights
from training.adapters import ADAPTER_WEIGHTS, check_compatible, read_head_rows
from training.labels import Label
from training.predictor import Prediction, Predictor
from training.registry import BASE, AdapterStore
from training.store.labels import LabelSet

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
    label_set_version: int = 0  # the label set served (0: the configured one, not synced)
    labels: int = 0  # active labels served


Row = tuple[torch.Tensor, torch.Tensor]  # one label's head weight row and bias


class ServingModel:
    """A Predictor plus the adapter version and label set it serves; one lock orders
    batches, swaps and label-set changes."""

    def __init__(
        self,
        predictor: Predictor,
        label_set: LabelSet,
        registry: AdapterStore,
        base_fingerprint: str,
        base_id: str,
        template: str,
        merge: bool = True,
    ):
        self.predictor = predictor
        self.merged = MergedWeights() if merge else None  # None: LoRA runs per forward
        self.label_set = label_set
        self.registry = registry
        self.base_fingerprint = base_fingerprint
        self.base_id = base_id
        self.template = template
        self.lock = threading.Lock()
        head = predictor.model.head
        # Zero-shot rows by (name, prompt): a new description gets a new row.
        self.zero_shot: dict[tuple[str, str], Row] = {
            (label.name, label.prompt(template)): (w.detach().clone(), b.detach().clone())
            for label, w, b in zip(predictor.labels, head.weight, head.bias)
        }
        self.adapter_rows: dict[str, Row] = {}  # the served adapter's trained rows
        self.trained_labels: frozenset[str] = frozenset()  # labels it learned from
        self.state = SwapState(pid=os.getpid())
        self._served_labels(label_set)
        metrics.record_serving(self.state.adapter)
        self.failed: dict[str, str] = {}  # version -> why it could not be loaded
        self.active_slot: str | None = None

    @property
    def version(self) -> str:
        return self.state.adapter

    @property
    def label_names(self) -> list[str]:
        return [label.name for label in self.predictor.labels]

    def predict(self, texts: Sequence[str]) -> tuple[list[Prediction], str, int]:
        """Predictions for a batch, and the one adapter version and label-set version that
        produced all of them."""
        with self.lock:
            predictions = self.predictor.predict(texts)
            return predictions, self.state.adapter, self.state.label_set_version

    def follow_labels(self, label_set: LabelSet) -> bool:
        """Serve `label_set` (new labels zero-shot, retired ones gone) unless already served."""
        if label_set.version == self.state.label_set_version:
            return False
        labels = label_set.active()
        with self.lock:  # the prompts are embedded by this worker's (shared) model
            self._embed_prompts(labels)
            self._set_head(labels, self.adapter_rows)
            self.label_set = label_set
            self._served_labels(label_set)
        log.info("now serving label set version %d: %d labels", label_set.version, len(labels))
        return True

    def _served_labels(self, label_set: LabelSet) -> None:
        self.state.label_set_version = label_set.version
        self.state.labels = len(self.predictor.labels)
        metrics.record_label_set(label_set.version)

    def _embed_prompts(self, labels: Sequence[Label]) -> None:
        """Zero-shot rows for the labels that lack one, by the base encoder (as training
        seeds them); call under the lock."""
        missing = [
            lab for lab in labels if (lab.name, lab.prompt(self.template)) not in self.zero_shot
        ]
        if not missing:
            return
        prompts = [label.prompt(self.template) for label in missing]
        with self._base_encoder():
            rows = (
                F.normalize(self.predictor.embeddings(prompts), dim=-1)
                * self.predictor.model.head.scale
            )
        for label, prompt, row in zip(missing, prompts, rows):
            self.zero_shot[label.name, prompt] = (row, torch.zeros(()))

    @contextlib.contextmanager
    def _base_encoder(self):
        """The base encoder for the duration, whatever adapter is served; call under the lock."""
        from peft import PeftModel

        encoder = self.predictor.model.encoder
        if not isinstance(encoder, PeftModel) or self.state.adapter == BASE:
            yield
        elif self.merged is not None:
            served = self.merged.load_base(encoder)
            try:
                yield
            finally:
                self.merged.load(encoder, served)
        else:
            encoder.base_model.disable_adapter_layers()
            try:
                yield
            finally:
                encoder.base_model.enable_adapter_layers()

    def _set_head(self, labels: Sequence[Label], trained: dict[str, Row]) -> None:
        """Head rows for `labels`: trained where the adapter has the label, else zero-shot."""
        rows = [
            trained.get(label.name) or self.zero_shot[label.name, label.prompt(self.template)]
            for label in labels
        ]
        weight = torch.stack([w.float() for w, _ in rows])
        bias = torch.stack([b.float().reshape(()) for _, b in rows])
        self.predictor.set_head(labels, weight, bias)

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
        rows = read_head_rows(folder, self.predictor.model.head.weight.shape[1])
        trained = trained_labels(adapter.manifest, rows)
        model = self.predictor.model
        from peft import PeftModel

        if not isinstance(model.encoder, PeftModel):
            # The first adapter wraps the encoder in place, so no batch may run meanwhile.
            with self.lock:
                model.encoder = PeftModel.from_pretrained(
                    model.encoder, folder, adapter_name=SLOTS[0]
                ).eval()
                if self.merged is None:
                    self._activate(version, rows, trained, SLOTS[0])
                    return
                model.encoder.base_model.disable_adapter_layers()  # the base until merged
            spare = SLOTS[0]
        else:
            spare = SLOTS[1] if self.active_slot == SLOTS[0] else SLOTS[0]
            self._fill(model.encoder, spare, folder)  # inactive: batches are unaffected
        merged = self.merged.merge(model.encoder, spare) if self.merged is not None else None
        with self.lock:
            if merged is None:
                model.encoder.base_model.enable_adapter_layers()
                model.encoder.set_adapter(spare)
            else:
                self.merged.load(model.encoder, merged)
            self._activate(version, rows, trained, spare)

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
        if loaded is not None and lora_shape(loaded) == lora_shape(config):
            weights = load_file(path / ADAPTER_WEIGHTS)
            params = slot_parameters(peft_model, slot)
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
            if isinstance(model.encoder, PeftModel) and self.merged is not None:
                self.merged.load_base(model.encoder)
            elif isinstance(model.encoder, PeftModel):
                model.encoder.base_model.disable_adapter_layers()
            self._activate(BASE, {}, frozenset())

    def _activate(
        self, version: str, rows: dict[str, Row], trained: frozenset[str], slot: str | None = None
    ) -> None:
        """Switch the head to `version`'s rows; call under the lock."""
        self._set_head(self.predictor.labels, rows)
        self.adapter_rows, self.trained_labels = rows, trained
        self.state.adapter = version
        if slot is not None:
            self.active_slot = slot
