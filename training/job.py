"""One training run end to end.

load feedback -> plan the evidence (training.evidence: cross-validation while corrections
are few, a holdout later) -> score CURRENT on texts it never learned from -> train
(continuing CURRENT while corrections are few, from the base model once they are not;
with cross-validation the recipe, LoRA or the head kept near its start, is chosen by
training.recipes) -> the gate (training.validation) -> publish + activate (or reject)
-> record the run.
One run at a time per store (the backends' run lock, released if the process dies); a
run that died midway is marked failed by the next one, and the registry's staging/publish
keeps it consistent.
"""

from __future__ import annotations

import logging
import time

import torch

from training import evidence, recipes, threads
from training.adapters import save_adapter
from training.backends import Backends
from training.evidence import CROSS_VALIDATION, Correction, Plan, Seen
from training.job_settings import JobSettings
from training.labels import Label
from training.locks import Held
from training.manifest import adapter_manifest
from training.predictor import Predictor, resolve_device
from training.recipes import HEAD, LORA
from training.registry import BASE
from training.schedule import due, pending_samples
from training.self_training import PseudoLabels, open_texts, pseudo_label
from training.split import holdout_percent
from training.store import RunState, TrainingRun
from training.store.labels import log_seed
from training.trainer import Trainer
from training.validation import Answers, Rule, decide, hits, lacking_evidence
from training.warm_start import WarmModel, continues_current, warm_model

log = logging.getLogger(__name__)


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
        parent = self.registry.current()
        plan = self._plan(cursor, labels, parent)
        run_id = self.store.start_run(
            trigger=trigger,
            parent=parent or BASE,
            data_cursor=cursor,
            train_samples=len(plan.train),
            validation_samples=len(plan.scored),
        )
        started = time.time()
        try:
            state, reason, candidate, report = self._train_and_gate(labels, plan, parent, cursor)
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

    def _plan(self, cursor: int, labels: list[Label], parent: str | None) -> Plan:
        """Active corrections up to the cursor whose label is still in the set, and how
        this run judges its candidate on them (training.evidence)."""
        names = {label.name for label in labels}
        corrections, first = [], {}  # a text's first correction: when a model could see it
        for sample in self.store.samples(include_superseded=True):
            if sample.id > cursor:
                break
            correction = Correction.of(sample, first)
            if sample.superseded_by is None and sample.label in names:
                corrections.append(correction)
        settings = self.settings
        return evidence.plan(
            corrections,
            cursor,
            self._seen(parent),
            floor_percent=settings.validation_percent,
            folds=settings.gate_folds,
            cv_below=settings.gate_cv_below,
            cv_max_samples=settings.gate_cv_max_samples,
        )

    def _seen(self, version: str | None) -> Seen | None:
        """The corrections `version` learned from (None for the base model)."""
        if version is None:
            return None
        manifest = self.registry.get(version).manifest
        return Seen.of_manifest(manifest, self.settings.validation_percent)

    def _rule(self) -> Rule:
        settings = self.settings
        return Rule(
            alpha=settings.gate_alpha,
            margin=settings.promotion_margin,
            min_samples=settings.min_validation_samples,
            noninferiority=settings.gate_noninferiority_margin,
            confidence=settings.gate_confidence,
        )

    def _train_and_gate(self, labels, plan: Plan, parent, cursor):
        settings = self.settings
        if not plan.train:
            return RunState.REJECTED, "no training samples yet", None, {}
        # The gate could not promote on this evidence: don't spend the training on it.
        if lacking := lacking_evidence(len(plan.scored), settings.min_validation_samples):
            return RunState.REJECTED, lacking, None, {}
        device = self._claim_device()
        warm = warm_model(settings, self.registry, labels, parent, device)
        texts, gold = [c.text for c in plan.scored], [c.label for c in plan.scored]
        current = Answers(hits(warm.predictor, texts, gold), warm.trained_on)
        names = [label.name for label in labels]
        # `warm` is CURRENT, or already fresh (first run, or CURRENT did not fit).
        if warm.warm_start and not continues_current(
            settings.train, len(plan.train), settings.train_warm_start
        ):
            warm = warm_model(settings, self.registry, labels, None, device)  # fresh
        start = warm.warm_start
        restart = lambda: warm_model(settings, self.registry, labels, start, device)  # noqa: E731
        gate, recipe, teacher_earned = None, LORA, True
        if plan.design == CROSS_VALIDATION:  # the recipes' out-of-fold answers first
            rule, k = self._rule(), settings.gate_folds
            choice = recipes.choose(
                plan, names, current, rule, settings.train, k, warm.predictor, restart
            )
            gate, recipe = choice.gate, choice.recipe
            if recipe is None:  # no final training for recipes that did not pass
                return RunState.REJECTED, gate.reason, None, {"gate": gate.as_dict()}
            teacher_earned = recipe == LORA and gate.lower_bound > 0  # a proven teacher
        train_texts, train_labels = [c.text for c in plan.train], [c.label for c in plan.train]
        if recipe == HEAD:  # on the embeddings the folds used: `warm` is their start
            result = choice.head.train(warm.predictor.model, train_texts, train_labels)
            pseudo = PseudoLabels()
        else:
            warm, result, pseudo = self._train(
                warm, names, train_texts, train_labels, cursor, restart, teacher_earned
            )
        if gate is None:  # a holdout: the candidate itself answers
            candidate = Answers(hits(warm.predictor, texts, gold), len(plan.train))
            gate = decide(current, candidate, self._rule(), {"design": plan.design})
        report = {
            "gate": gate.as_dict(),
            "train": vars(result),
            "recipe": recipe,
            "warm_start": warm.warm_start,
            "device": str(device),
            "self_training": pseudo.report(settings.self_training_threshold),
        }
        if not teacher_earned:
            report["self_training"]["skipped"] = (
                "the head recipe learns from the corrections only"
                if recipe == HEAD
                else "the teacher did not beat current out of fold"
            )
        if not gate.promote:
            return RunState.REJECTED, gate.reason, None, report
        report["data_cursor"] = cursor
        seen = plan.seen(cursor).and_parent(plan.current if warm.warm_start else None)
        version = self._publish(warm, names, parent, report, train_labels, seen)
        return RunState.PROMOTED, gate.reason, version, report

    def _train(self, warm: WarmModel, names, texts, labels, cursor: int, restart, teach=True):
        """Train `warm` on the corrections; with self-training (and `teach`), that model
        is the teacher of uncorrected texts it is sure of, and a student from the same
        start (`restart()`) learns from both; each round's student teaches the next.
        (model, TrainResult, PseudoLabels of the last student)."""
        config = self.settings.train
        result = Trainer(warm.predictor.model, warm.predictor.tokenizer, names, config).train(
            texts, labels
        )
        pseudo = PseudoLabels()
        for done in range(self.settings.self_training_rounds if teach else 0):
            found = self._pseudo_labels(warm.predictor, cursor)
            if not found.texts:  # the last student stands; a first round still reports its pool
                return warm, result, pseudo if done else found
            found.teacher_seconds = pseudo.teacher_seconds + result.seconds
            found.rounds = done + 1
            pseudo, warm = found, restart()
            model, tokenizer = warm.predictor.model, warm.predictor.tokenizer
            result = Trainer(model, tokenizer, names, config).train(
                texts + pseudo.texts, labels + pseudo.labels
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

    def _publish(self, warm: WarmModel, names, parent, report, train_labels, seen: Seen) -> str:
        version = self.registry.new_version_name()
        manifest = adapter_manifest(
            warm, names, parent or BASE, report, train_labels, seen,
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
