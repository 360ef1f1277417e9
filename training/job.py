"""One training run end to end, and when to start one.

load feedback -> warm-start from CURRENT -> score CURRENT -> train -> score candidate
-> publish + activate (or reject) -> record the run. One run at a time per data
directory (an flock the kernel releases if the process dies); a run that died midway is
marked failed by the next one, and the registry's staging/rename keeps it consistent.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from training.adapters import (
    AdapterMismatch,
    attach_lora,
    check_compatible,
    fingerprint,
    load_head,
    save_adapter,
)
from training.labels import Label
from training.model import TextClassifier, base_model_id, load_encoder
from training.predictor import Predictor, resolve_device
from training.registry import AdapterRegistry, RegistryError
from training.store import FeedbackStore, TrainingRun
from training.trainer import TrainConfig, Trainer
from training.validation import accuracy, decide, lacking_evidence

log = logging.getLogger(__name__)
BASE = "base"
LOCK_FILE = "train.lock"


def training_cursor(store: FeedbackStore) -> int:
    """The data cursor of the last run that finished training (promoted or rejected)."""
    runs = store.runs(limit=1, states=("promoted", "rejected"))
    return runs[0].data_cursor if runs else 0


def pending_samples(store: FeedbackStore) -> int:
    """Corrections that arrived after the last run that finished training."""
    return store.count_samples(after_id=training_cursor(store))


class TrainingBusy(RuntimeError):
    """Another training run holds the lock."""


@dataclass(frozen=True)
class JobConfig:
    """Plain values a run needs (built from Settings by the caller)."""

    base_model: str
    labels: Sequence[Label]
    label_template: str
    train: TrainConfig = field(default_factory=TrainConfig)
    device: str = "auto"
    threads: int = 0
    precision: str = "auto"
    max_tokens: int = 128  # the serving truncation: the gate scores exactly as serving does
    gpu_memory_fraction: float = 0.5
    min_new_samples: int = 50
    max_interval_s: float = 3_600.0
    failure_backoff_s: float = 300.0
    promotion_margin: float = 0.0
    min_validation_samples: int = 20


@dataclass
class Feedback:
    texts: list[str]
    labels: list[str]


class TrainingJob:
    """Decides when to train and runs one training run at a time."""

    def __init__(self, data_dir: Path, store: FeedbackStore, registry: AdapterRegistry, config):
        self.data_dir = Path(data_dir)
        self.store = store
        self.registry = registry
        self.config: JobConfig = config

    def due(self, now: float | None = None) -> str | None:
        """Why a run should start now ("samples" or "interval"), or None."""
        now = time.time() if now is None else now
        last = self.store.last_run()
        backing_off = last and last.state == "failed" and last.finished_at
        if backing_off and now - last.finished_at < self.config.failure_backoff_s:
            return None
        cursor = training_cursor(self.store)
        if self.store.count_samples(after_id=cursor) >= self.config.min_new_samples:
            return "samples"
        oldest = self.store.oldest_sample_time(after_id=cursor)
        if oldest is not None and now - oldest >= self.config.max_interval_s:
            return "interval"
        return None

    def pending(self) -> int:
        """Corrections that arrived after the last finished run."""
        return pending_samples(self.store)

    def run(self, trigger: str = "manual") -> TrainingRun:
        """Train, validate and publish-or-reject once; TrainingBusy if a run is under way."""
        with self._lock():
            interrupted = self.store.fail_interrupted_runs("interrupted: the trainer process died")
            if interrupted:
                log.warning("marked %d interrupted training run(s) failed", interrupted)
            self.registry.clean_staging()
            return self._run_locked(trigger)

    def _lock(self):
        self.data_dir.mkdir(parents=True, exist_ok=True)
        handle = open(self.data_dir / LOCK_FILE, "a+")  # noqa: SIM115 - closed by _Lock
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise TrainingBusy("a training run is already in progress") from None
        return _Lock(handle)

    def _run_locked(self, trigger: str) -> TrainingRun:
        cursor = self.store.max_sample_id()
        train, validation = self._feedback(cursor)
        parent = self.registry.current()
        run_id = self.store.start_run(
            trigger=trigger,
            parent=parent or BASE,
            data_cursor=cursor,
            train_samples=len(train.texts),
            validation_samples=len(validation.texts),
        )
        started = time.time()
        try:
            state, reason, candidate, report = self._train_and_gate(
                train, validation, parent, cursor
            )
        except Exception as exc:  # recorded, and the service keeps serving CURRENT
            log.exception("training run %d failed", run_id)
            state, reason, candidate, report = "failed", f"{type(exc).__name__}: {exc}", None, {}
        report["duration_s"] = round(time.time() - started, 3)
        self.store.finish_run(
            run_id, state=state, reason=reason, candidate=candidate, report=report
        )
        log.info("training run %d %s: %s", run_id, state, reason)
        return self.store.runs(limit=1)[0]

    def _feedback(self, cursor: int) -> tuple[Feedback, Feedback]:
        """Active samples up to the cursor whose label is still in the label set."""
        names = {label.name for label in self.config.labels}
        splits = {"train": Feedback([], []), "validation": Feedback([], [])}
        for sample in self.store.samples():
            if sample.id <= cursor and sample.label in names:
                splits[sample.split].texts.append(sample.text)
                splits[sample.split].labels.append(sample.label)
        return splits["train"], splits["validation"]

    def _train_and_gate(
        self, train: Feedback, validation: Feedback, parent: str | None, cursor: int
    ):
        config = self.config
        if not train.texts:
            return "rejected", "no training samples yet", None, {}
        # The gate could not promote on this evidence: don't spend the training on it.
        if lacking := lacking_evidence(len(validation.texts), config.min_validation_samples):
            return "rejected", lacking, None, {}
        device = resolve_device(config.device)
        if device.type == "cpu":  # serving keeps priority through the process's niceness
            torch.set_num_threads(config.threads or os.cpu_count() or 1)
        else:  # share the GPU with the serving workers within a set budget
            torch.cuda.set_per_process_memory_fraction(config.gpu_memory_fraction, device)
        model, tokenizer, base_info, warm = self._warm_model(parent, device)
        predictor = self._predictor(model, tokenizer, device)
        current = accuracy(predictor, validation.texts, validation.labels)
        names = [label.name for label in config.labels]
        result = Trainer(model, tokenizer, names, config.train).train(train.texts, train.labels)
        candidate = accuracy(predictor, validation.texts, validation.labels)
        gate = decide(
            current,
            candidate,
            len(validation.texts),
            margin=config.promotion_margin,
            min_samples=config.min_validation_samples,
        )
        report = {
            "gate": gate.as_dict(),
            "train": vars(result),
            "warm_start": warm,
            "device": str(device),
        }
        if not gate.promote:
            return "rejected", gate.reason, None, report
        report["data_cursor"] = cursor
        version = self._publish(model, names, parent, base_info, report, train, validation)
        return "promoted", gate.reason, version, report

    def _warm_model(self, parent: str | None, device: torch.device):
        """The model in service (base + CURRENT adapter + head) with a trainable LoRA."""
        config = self.config
        encoder, tokenizer = load_encoder(config.base_model)
        base_info = {"id": base_model_id(config.base_model)}
        base_info["fingerprint"] = fingerprint(encoder)
        model = TextClassifier(encoder, len(config.labels))
        Predictor(model, tokenizer, config.labels, device=str(device)).init_head_from_labels(
            config.label_template
        )
        warm = None
        if parent is not None:
            try:
                adapter = self.registry.get(parent)
                fingerprint_, base_id = base_info["fingerprint"], base_info["id"]
                check_compatible(adapter.manifest, parent, fingerprint_, base_id)
                attach_lora(model, config.train, warm_start=adapter.path)
                load_head(model, [label.name for label in config.labels], adapter.path)
                warm = parent
            except (AdapterMismatch, RegistryError) as exc:
                log.warning("not warm-starting from %s: %s", parent, exc)
        if warm is None:
            attach_lora(model, config.train)
        return model.to(device), tokenizer, base_info, warm

    def _predictor(self, model, tokenizer, device) -> Predictor:
        return Predictor(
            model,
            tokenizer,
            self.config.labels,
            device=str(device),
            precision=self.config.precision,
            max_tokens=self.config.max_tokens,
        )

    def _publish(self, model, names, parent, base_info, report, train, validation) -> str:
        version = self.registry.new_version_name()
        manifest = {
            "parent": parent or BASE,
            "base_model": base_info,
            "labels": names,
            "metrics": {
                "validation_accuracy": report["gate"]["candidate_accuracy"],
                "parent_validation_accuracy": report["gate"]["current_accuracy"],
                "validation_samples": len(validation.texts),
                "train_samples": len(train.texts),
            },
            "data_cursor": report["data_cursor"],
            "hyperparameters": self.config.train.model_dump(mode="json"),
            "device": report["device"],
            "train": report["train"],
            "created_at": time.time(),
        }
        with self.registry.staging() as folder:
            save_adapter(model, names, folder)
            self.registry.publish(folder, version, manifest)
        self.registry.activate(version)
        self.registry.prune()
        return version


class _Lock:
    """Holds the flock until the `with` block ends."""

    def __init__(self, handle):
        self.handle = handle

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()
