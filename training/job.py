"""One training run end to end.

load feedback -> load and score CURRENT -> train (continuing CURRENT while corrections are
few, from the base model once they are not) -> score candidate
-> publish + activate (or reject) -> record the run. One run at a time per store (the
backends' run lock, released if the process dies); a run that died midway is marked
failed by the next one, and the registry's staging/publish keeps it consistent.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch

from training import threads
from training.adapters import (
    AdapterMismatch,
    attach_lora,
    check_compatible,
    fingerprint,
    load_head,
    save_adapter,
)
from training.backends import Backends
from training.job_settings import JobSettings
from training.labels import Label
from training.locks import Held
from training.manifest import adapter_manifest
from training.model import base_model_id
from training.predictor import Predictor, resolve_device, zero_shot_predictor
from training.registry import BASE, RegistryError
from training.schedule import due, pending_samples
from training.self_training import PseudoLabels, open_texts, pseudo_label
from training.split import holdout_percent, split_for, text_key
from training.store import RunState, TrainingRun
from training.store.labels import log_seed
from training.trainer import Trainer
from training.validation import Answers, decide, hits, lacking_evidence
from training.warm_start import WarmModel, continues_current

log = logging.getLogger(__name__)


@dataclass
class Feedback:
    texts: list[str]
    labels: list[str]


class TrainingJob:
    """Decides when to train and runs one training run at a time."""

    def __init__(self, backends: Backends, settings: JobSettings):
        self.store = backends.store
        self.registry = backends.registry
        self.run_lock = backends.run_lock
        self.settings = settings
        self._seeded = False
        self._held = Held()

    def due(self, now: float | None = None) -> str | None:
        """Why a run should start now ("samples" or "interval"), or None."""
        settings = self.settings
        return due(
            self.store,
            min_new_samples=settings.train_min_new_samples,
            first_samples=settings.train_first_samples,
            max_interval_s=settings.train_max_interval_s,
            failure_backoff_s=settings.train_failure_backoff_s,
            now=now,
        )

    def pending(self) -> int:
        """Corrections that arrived after the last finished run."""
        return pending_samples(self.store)

    def run(self, trigger: str = "manual") -> TrainingRun:
        """Train, validate and publish-or-reject once; TrainingBusy if a run is under way."""
        with self.run_lock() as held:
            self._held = held  # confirmed before CURRENT moves: a lease can be lost
            interrupted = self.store.fail_interrupted_runs("interrupted: the trainer process died")
            if interrupted:
                log.warning("marked %d interrupted training run(s) failed", interrupted)
            self.registry.clean_staging()
            return self._run_locked(trigger)

    def labels(self) -> list[Label]:
        """The active labels of the store's set, seeded from the settings on first use
        (whichever of the service and the trainer reaches the store first seeds it)."""
        if not self._seeded:
            log_seed(self.store.seed_labels(self.settings.label_set(), time.time()), "trainer")
            self._seeded = True
        return self.store.label_set().active()

    def _run_locked(self, trigger: str) -> TrainingRun:
        # The set as the run starts: a label added meanwhile is served zero-shot until the
        # next run, a label retired meanwhile is left out of serving's head by name.
        labels = self.labels()
        cursor = self.store.max_sample_id()
        train, validation = self._feedback(cursor, labels)
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
                labels, train, validation, parent, cursor
            )
        except Exception as exc:  # recorded, and the service keeps serving CURRENT
            log.exception("training run %d failed", run_id)
            reason = f"{type(exc).__name__}: {exc}"
            state, candidate, report = RunState.FAILED, None, {}
        report["duration_s"] = round(time.time() - started, 3)
        self.store.finish_run(
            run_id, state=state, reason=reason, candidate=candidate, report=report
        )
        log.info("training run %d %s: %s", run_id, state, reason)
        return self.store.runs(limit=1)[0]

    def _feedback(self, cursor: int, labels: list[Label]) -> tuple[Feedback, Feedback]:
        """Active samples up to the cursor whose label is still in the label set, split
        into (train, held out): the store's validation split, and while data is scarce
        more texts by the same hash (training.split.holdout_percent)."""
        names = {label.name for label in labels}
        percent = holdout_percent(cursor, self.settings.validation_percent)
        splits = {"train": Feedback([], []), "validation": Feedback([], [])}
        for sample in self.store.samples():
            if sample.id <= cursor and sample.label in names:
                split = sample.split
                if split == "train":  # the early holdout: a shrinking superset of the floor
                    split = split_for(text_key(sample.text), percent)
                splits[split].texts.append(sample.text)
                splits[split].labels.append(sample.label)
        return splits["train"], splits["validation"]

    def _train_and_gate(self, labels, train: Feedback, validation: Feedback, parent, cursor):
        settings = self.settings
        if not train.texts:
            return RunState.REJECTED, "no training samples yet", None, {}
        # The gate could not promote on this evidence: don't spend the training on it.
        if lacking := lacking_evidence(len(validation.texts), settings.min_validation_samples):
            return RunState.REJECTED, lacking, None, {}
        device = self._claim_device()
        warm = self._warm_model(labels, parent, device)
        predictor = warm.predictor
        current = Answers(hits(predictor, validation.texts, validation.labels), warm.trained_on)
        names = [label.name for label in labels]
        # `warm` is CURRENT, or already fresh (first run, or CURRENT did not fit).
        if warm.warm_start and not continues_current(
            settings.train, len(train.texts), settings.train_warm_start
        ):
            warm = self._warm_model(labels, None, device)  # fresh LoRA and head
        start = warm.warm_start
        restart = lambda: self._warm_model(labels, start, device)  # noqa: E731
        warm, result, pseudo = self._train(warm, names, train, cursor, restart)
        predictor = warm.predictor
        candidate = Answers(hits(predictor, validation.texts, validation.labels), len(train.texts))
        gate = decide(
            current,
            candidate,
            alpha=settings.gate_alpha,
            margin=settings.promotion_margin,
            min_samples=settings.min_validation_samples,
        )
        report = {
            "gate": gate.as_dict(),
            "train": vars(result),
            "warm_start": warm.warm_start,
            "device": str(device),
            "self_training": pseudo.report(settings.self_training_threshold),
        }
        if not gate.promote:
            return RunState.REJECTED, gate.reason, None, report
        report["data_cursor"] = cursor
        version = self._publish(warm, names, parent, report, train, validation)
        return RunState.PROMOTED, gate.reason, version, report

    def _train(self, warm: WarmModel, names, train: Feedback, cursor: int, restart):
        """Train `warm` on the corrections; with self-training, that model is the teacher
        of uncorrected texts it is sure of, and a student from the same start
        (`restart()`) learns from both; each round's student teaches the next.
        (model, TrainResult, PseudoLabels of the last student)."""
        config = self.settings.train
        result = Trainer(warm.predictor.model, warm.predictor.tokenizer, names, config).train(
            train.texts, train.labels
        )
        pseudo = PseudoLabels()
        for done in range(self.settings.self_training_rounds):
            found = self._pseudo_labels(warm.predictor, cursor)
            if not found.texts:  # the last student stands; a first round still reports its pool
                return warm, result, pseudo if done else found
            found.teacher_seconds = pseudo.teacher_seconds + result.seconds
            found.rounds = done + 1
            pseudo, warm = found, restart()
            model, tokenizer = warm.predictor.model, warm.predictor.tokenizer
            result = Trainer(model, tokenizer, names, config).train(
                train.texts + pseudo.texts, train.labels + pseudo.labels
            )
        return warm, result, pseudo

    def _pseudo_labels(self, teacher: Predictor, cursor: int) -> PseudoLabels:
        """Uncorrected served texts `teacher` is sure of (training.self_training)."""
        settings = self.settings
        if not (settings.self_training_threshold and settings.self_training_pool):
            return PseudoLabels()
        texts = open_texts(
            self.store,
            pool=settings.self_training_pool,
            max_age_s=settings.prediction_retention_hours * 3600,
        )
        pseudo = pseudo_label(
            teacher,
            texts,
            threshold=settings.self_training_threshold,
            holdout_percent=holdout_percent(cursor, settings.validation_percent),
        )
        log.info("self-training: %d of %d uncorrected texts pseudo-labeled (p >= %s)",
                 len(pseudo.texts), pseudo.pool, settings.self_training_threshold)  # fmt: skip
        return pseudo

    def _claim_device(self) -> torch.device:
        """The training device, with this process's share of it set."""
        settings = self.settings
        device = resolve_device(settings.train_device)
        if device.type == "cpu":  # serving keeps priority through the process's niceness
            threads.govern(cap=settings.train_threads)  # only the cores others leave free
        else:  # share the GPU with the serving workers within a set budget
            torch.cuda.set_per_process_memory_fraction(settings.train_gpu_memory_fraction, device)
        return device

    def _warm_model(self, labels: list[Label], parent: str | None, device) -> WarmModel:
        """The zero-shot model, continued from CURRENT's adapter and head when they fit."""
        settings = self.settings
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
                adapter = self.registry.get(parent)
                fingerprint_, base_id = base_info["fingerprint"], base_info["id"]
                check_compatible(adapter.manifest, parent, fingerprint_, base_id)
                folder = self.registry.materialize(parent)
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

    def _publish(self, warm: WarmModel, names, parent, report, train, validation) -> str:
        version = self.registry.new_version_name()
        manifest = adapter_manifest(
            warm, names, parent or BASE, report, train.labels, len(validation.texts),
            self.settings.train.model_dump(mode="json"),
        )  # fmt: skip
        with self.registry.staging() as folder:
            save_adapter(warm.predictor.model, names, folder)
            self.registry.publish(folder, version, manifest)
        self._held.confirm()  # LeaseLost: another trainer may have taken over; fail the run
        self.registry.activate(version)
        self.registry.prune(spare=self._served_versions())
        return version

    def _served_versions(self) -> set[str]:
        """Versions a live worker of any replica still serves: never pruned from under it."""
        live = self.store.workers(seen_within_s=self.settings.worker_stale_s)
        return {worker.state.get("adapter") for worker in live} - {None, BASE}
