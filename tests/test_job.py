"""A whole training run on a tiny model: feedback in, adapter published (or refused) out."""

from __future__ import annotations

import contextlib
import random
import threading

import pytest

from tests.conftest import TOY_LABELS
from tests.factories import TINY_TRAIN, tiny_job_settings, toy_samples
from training.backends import open_backends
from training.job import TrainingJob, continues_current
from training.labels import Label
from training.locks import Held, LeaseLost, TrainingBusy
from training.split import holdout_percent, split_for, text_key
from training.store import NewSample, PredictionRecord
from training.trainer import TrainConfig
from training.validation import accuracy
from training.warm_start import warm_model

# A gate that judges 240 toy corrections at 30% held out and needs 10 texts to promote.
SMALL = {"validation_percent": 30, "min_validation_samples": 10}


@contextlib.contextmanager
def tiny_training_job(tmp_path, model_dir, labels=(), **overrides):
    """A TrainingJob on the tiny model, its store and registry closed afterwards."""
    settings = tiny_job_settings(tmp_path, model_dir, labels, **overrides)
    backends = open_backends(settings)
    try:
        yield TrainingJob(backends, settings)
    finally:
        backends.close()


@pytest.fixture
def job(tmp_path, tiny_model_dir):
    with tiny_training_job(
        tmp_path,
        tiny_model_dir,
        **SMALL,
        keep_adapters=3,
        train_min_new_samples=20,
    ) as job:
        yield job


def add(job: TrainingJob, samples) -> None:
    job.store.add_samples([NewSample(text, label, source="test") for text, label in samples])


def test_a_run_on_a_learnable_task_is_promoted_with_its_evidence(job):
    add(job, toy_samples(240))
    run = job.run("manual")
    gate = run.report["gate"]
    assert run.state == "promoted", run.reason
    # 0.89-0.95 on the tiny model, by how many threads the governor gives it on a busy host.
    assert gate["candidate_accuracy"] >= 0.85 > gate["current_accuracy"]
    assert job.registry.current() == run.candidate
    manifest = job.registry.get(run.candidate).manifest
    assert manifest["parent"] == "base"
    assert manifest["metrics"]["validation_accuracy"] == gate["candidate_accuracy"]
    assert manifest["data_cursor"] == run.data_cursor == job.store.max_sample_id()
    assert manifest["base_model"]["fingerprint"]
    assert manifest["hyperparameters"]["epochs"] == TINY_TRAIN.epochs
    counts = manifest["metrics"]["label_counts"]  # what GET /labels calls `trained`
    assert sum(counts.values()) == run.train_samples and set(counts) == set(TOY_LABELS)
    # 240 corrections are few: every one was scored out of fold (the holdout would have
    # held 72), and the candidate learned from all of them but the store's validation split.
    assert gate["evidence"]["design"] == "cross-validation"
    assert run.validation_samples == gate["validation_samples"] == 240
    assert run.train_samples == len(job.store.samples(split="train"))
    folds = manifest["gate"]["evidence"]["folds"]  # the folds' evidence, with the adapter
    assert len(folds) == gate["evidence"]["k"] == 5
    assert sum(fold["scored"] for fold in folds) == 240
    assert all(0 <= fold["accuracy"] <= 1 and fold["train"] >= 160 for fold in folds)
    assert gate["lower_bound"] >= -gate["noninferiority"]
    assert manifest["seen"] == {"cursor": 240, "percent": 30}


def test_a_run_whose_lease_was_lost_fails_and_leaves_current_alone(job):
    class Lost(Held):
        def confirm(self) -> None:  # what the PostgreSQL lease says once another took over
            raise LeaseLost("the 'training-run' lease expired")

    job.run_lock = contextlib.contextmanager(lambda: (yield Lost()))
    add(job, toy_samples(240))
    run = job.run("manual")
    assert run.state == "failed" and "LeaseLost" in run.reason
    assert job.registry.current() is None  # still the zero-shot model: CURRENT never moved


@pytest.mark.parametrize(
    ("warm_start", "folds"), [("auto", 0), ("always", 0), ("auto", 5)]
)  # fmt: skip
def test_a_candidate_trained_on_wrong_labels_is_rejected_and_current_kept(job, warm_start, folds):
    job.settings = job.settings.model_copy(
        update={"train_warm_start": warm_start, "gate_folds": folds}
    )
    samples = toy_samples(240)
    add(job, samples)
    good = job.run("manual")
    assert good.state == "promoted", good.reason
    train_texts = {s.text for s in job.store.samples(split="train")}
    if folds:  # cross-validation scores every correction: wrong ones at random, a broken feed
        rng = random.Random(0)
        wrong = {text: rng.choice(TOY_LABELS) for text in train_texts}
    else:  # a holdout gate: every training text gets a wrong label, rotated
        rotate = {a: b for a, b in zip(TOY_LABELS, TOY_LABELS[1:] + TOY_LABELS[:1])}
        wrong = {text: rotate[label] for text, label in samples if text in train_texts}
    add(job, [(text, wrong[text]) for text, _ in samples if text in wrong])  # truth kept
    bad = job.run("manual")  # on the store's validation split, never trained on
    assert bad.state == "rejected", bad.reason
    assert bad.report["gate"]["evidence"]["design"] == ("cross-validation" if folds else "holdout")
    if not folds:
        # 25 tiny epochs outlast the step floor: auto starts afresh, always continues CURRENT.
        assert bad.report["warm_start"] == (good.candidate if warm_start == "always" else None)
    assert bad.parent == good.candidate  # either way, the gate's comparison is with CURRENT
    assert bad.report["gate"]["candidate_accuracy"] < bad.report["gate"]["current_accuracy"]
    assert bad.candidate is None
    assert job.registry.current() == good.candidate
    assert [v.version for v in job.registry.versions()] == [good.candidate]


def test_a_run_continues_current_only_while_the_step_floor_sets_its_length():
    config = TrainConfig()  # 3 epochs of 32, at least 250 steps
    assert continues_current(config, 1_442)  # 46 batches x 3 = 138 steps < 250: continue
    assert continues_current(config, 2_656)  # 83 x 3 = 249
    assert not continues_current(config, 2_657)  # 84 x 3 = 252: the epochs set it, fresh
    assert not continues_current(config, 9_527)
    assert continues_current(config, 9_527, "always")
    assert not continues_current(config, 10, "never")


def test_too_little_validation_evidence_is_never_promoted(job):
    add(job, toy_samples(8))  # fewer texts than the 10 held-out samples the gate needs
    run = job.run("manual")
    assert run.state == "rejected"
    assert "validation samples" in run.reason
    assert "train" not in run.report  # refused before spending a training run on it
    assert job.registry.current() is None


def test_no_samples_is_a_recorded_rejection(job):
    run = job.run("manual")
    assert (run.state, run.reason) == ("rejected", "no training samples yet")
    assert job.store.last_run().id == run.id


def test_due_after_enough_new_samples_and_after_the_interval(job):
    assert job.due() is None
    add(job, toy_samples(5))
    assert job.due() is None
    assert job.due(now=job.store.oldest_sample_time() + 3_600) == "interval"
    add(job, toy_samples(30, seed=1))
    assert job.due() == "samples"
    job.store.finish_run(
        job.store.start_run(
            trigger="samples",
            parent="base",
            data_cursor=job.store.max_sample_id(),
            train_samples=0,
            validation_samples=0,
        ),
        state="rejected",
        reason="test",
        candidate=None,
        report={},
    )
    assert job.pending() == 0
    assert job.due() is None


def test_a_failed_run_backs_off(job):
    add(job, toy_samples(30))
    run_id = job.store.start_run(
        trigger="samples", parent="base", data_cursor=0, train_samples=0, validation_samples=0
    )
    job.store.finish_run(run_id, state="failed", reason="boom", candidate=None, report={})
    assert job.due() is None
    assert job.due(now=job.store.last_run().finished_at + 301) == "samples"


def test_one_run_at_a_time_and_interrupted_runs_are_marked_failed(job):
    add(job, toy_samples(30))
    crashed = job.store.start_run(
        trigger="samples", parent="base", data_cursor=0, train_samples=0, validation_samples=0
    )
    with job.run_lock():
        errors = []
        thread = threading.Thread(target=lambda: errors.append(_busy(job)))
        thread.start()
        thread.join()
        assert errors == [True]
    job.run("manual")
    runs = {run.id: run for run in job.store.runs()}
    assert runs[crashed].state == "failed"
    assert "interrupted" in runs[crashed].reason


def _busy(job: TrainingJob) -> bool:
    try:
        job.run("manual")
    except TrainingBusy:
        return True
    return False


def test_a_broken_base_model_is_a_failed_run_not_a_crash(job, tmp_path):
    add(job, toy_samples(40))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{}")
    job.settings = job.settings.model_copy(update={"base_model": str(tmp_path / "broken")})
    run = job.run("manual")
    assert run.state == "failed"
    assert run.reason
    assert job.registry.current() is None


def test_on_a_two_label_task_the_first_promotion_comes_early_and_only_on_evidence(
    tmp_path, tiny_model_dir
):
    """Default trigger and gate: runs at 10, 20, 40, ... corrections, each judged on the
    out-of-fold answers of every correction; the first promotion comes as soon as the
    recipe's evidence clears the non-inferiority bound, never on a presumption."""
    labels = TOY_LABELS[:2]
    samples = [(text, label) for text, label in toy_samples(300) if label in labels]
    with tiny_training_job(tmp_path, tiny_model_dir, labels) as job:
        promoted_at, runs_at = None, []
        for count, sample in enumerate(samples[:80], start=1):
            add(job, [sample])
            if job.due():
                runs_at.append(count)
                if job.run("samples").state == "promoted":
                    promoted_at = count
                    break
        assert runs_at[0] == job.settings.train_first_samples == 10
        assert promoted_at is not None and promoted_at <= 40, [r.reason for r in job.store.runs()]
        for run in job.store.runs():
            gate = run.report.get("gate")
            if gate is not None:
                assert gate["evidence"]["design"] == "cross-validation"
                assert gate["validation_samples"] == run.validation_samples
                assert (run.state == "promoted") == (gate["lower_bound"] >= -0.02), run.reason


def test_the_early_holdout_only_shrinks_so_no_gate_scores_a_text_an_adapter_trained_on():
    keys = [text_key(text) for text, _ in toy_samples(2_000)]
    held_out_before = set(keys)
    for cursor in (1, 10, 20, 50, 100, 400, 1_000, 5_000, 50_000):
        percent = holdout_percent(cursor, 5.0)
        held_out = {key for key in keys if split_for(key, percent) == "validation"}
        assert held_out <= held_out_before
        held_out_before = held_out
    assert holdout_percent(20, 5.0) == 50.0
    assert holdout_percent(1_000, 5.0) == pytest.approx(7.9, abs=0.1)
    assert holdout_percent(10_000, 5.0) == 5.0
    assert holdout_percent(10_000, 20.0) == 20.0


def _serve(job: TrainingJob, texts: list[str]) -> None:
    """What serving does for each text it answers: remember it in the prediction log."""
    job.store.log_predictions(
        [
            PredictionRecord(f"p{i}", text, TOY_LABELS[0], 0.5, "base")
            for i, text in enumerate(texts)
        ]
    )


def test_self_training_learns_uncorrected_served_texts_never_the_held_out_ones(
    tmp_path, tiny_model_dir
):
    with tiny_training_job(
        tmp_path,
        tiny_model_dir,
        **SMALL,
        self_training_threshold=0.5,
    ) as job:
        samples = toy_samples(400)
        corrected, served = samples[:240], [text for text, _ in samples[240:]]
        add(job, corrected)
        _serve(job, served + [corrected[0][0]])  # one served text was corrected since
        run = job.run("manual")
        report = run.report["self_training"]
        percent = holdout_percent(job.store.max_sample_id(), job.settings.validation_percent)
        outside = [t for t in served if split_for(text_key(t), percent) == "train"]
        # Every uncorrected text outside the gate's share was looked at, and no other.
        assert 0 < report["pool"] == len(outside) < len(served)
        # The teacher trained on the corrections first, then labeled what it was sure of.
        assert 0 < report["pseudo_labeled"] <= report["pool"]
        assert report["threshold"] == 0.5 and report["teacher_seconds"] > 0
        assert report["rounds"] == 1
        assert run.state == "promoted", run.reason
        manifest = job.registry.get(run.candidate).manifest
        assert manifest["metrics"]["pseudo_labeled"] == report["pseudo_labeled"]
        assert manifest["metrics"]["train_samples"] == run.train_samples  # corrections only
        # The gate still decided on held-out corrections only.
        assert run.report["gate"]["candidate_accuracy"] >= 0.85


def test_pseudo_labels_skip_held_out_texts_and_keep_only_confident_ones(tiny_model_dir):
    from training.predictor import zero_shot_predictor
    from training.self_training import pseudo_label

    teacher = zero_shot_predictor(
        str(tiny_model_dir), [Label(n) for n in TOY_LABELS], template="{name}"
    )
    texts = [(text, text_key(text)) for text, _ in toy_samples(200)]
    everything = pseudo_label(teacher, texts, threshold=0.0, holdout_percent=40)
    outside = [t for t, key in texts if split_for(key, 40) == "train"]
    assert everything.texts == outside and 0 < len(outside) < len(texts)
    assert set(everything.labels) <= set(TOY_LABELS)
    probabilities = teacher.probabilities(outside).max(-1).values
    cut = float(probabilities.median())
    sure = pseudo_label(teacher, texts, threshold=cut, holdout_percent=40)
    assert sure.texts == [t for t, p in zip(outside, probabilities.tolist()) if p >= cut]
    assert sure.pool == len(outside)
    assert pseudo_label(teacher, texts, threshold=1.01, holdout_percent=40).texts == []


def test_a_gpu_run_sets_its_memory_share_on_an_indexed_device(job, monkeypatch):
    """On the H200 a run with LIVETUNE_TRAIN_DEVICE=cuda failed before training: torch's
    memory calls refuse a bare `cuda` device. No GPU here, so the CUDA calls are stubbed,
    and the stub applies torch's own device-index check, the one that raised there."""
    import torch
    from torch.cuda._utils import _get_device_index

    claimed = []

    def set_fraction(fraction, device):
        claimed.append((fraction, _get_device_index(device)))  # raises on a bare "cuda"

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", set_fraction)
    job.settings = job.settings.model_copy(update={"train_device": "cuda"})
    assert job._claim_device() == torch.device("cuda", 0)
    assert claimed == [(job.settings.train_gpu_memory_fraction, 0)]


def test_each_self_training_round_s_student_teaches_the_next(tmp_path, tiny_model_dir, monkeypatch):
    with tiny_training_job(
        tmp_path,
        tiny_model_dir,
        **SMALL,
        self_training_threshold=0.5,
        self_training_rounds=2,
    ) as job:
        samples = toy_samples(400)
        add(job, samples[:240])
        _serve(job, [text for text, _ in samples[240:]])
        teachers, label = [], job._pseudo_labels
        monkeypatch.setattr(
            job, "_pseudo_labels", lambda teacher, cursor: teachers.append(teacher.model)
            or label(teacher, cursor),
        )  # fmt: skip
        run = job.run("manual")
        report = run.report["self_training"]
        # The corrections' model labeled the texts, then the student it taught did.
        assert report["rounds"] == 2 and len(teachers) == 2
        assert teachers[0] is not teachers[1] and report["pseudo_labeled"] > 0
        assert report["teacher_seconds"] > 0
        assert run.state == "promoted", run.reason


def test_self_training_waits_for_a_teacher_that_beat_current_out_of_fold(tmp_path, tiny_model_dir):
    """With cross-validated evidence a run's pseudo-labels are used only when the recipe
    beat the model in service (bound above 0); a candidate promoted as merely not worse
    (the bound and the test turned off here, so the second run is promoted on more
    data) learns from the corrections alone."""
    with tiny_training_job(
        tmp_path,
        tiny_model_dir,
        **SMALL,
        self_training_threshold=0.5,
        gate_noninferiority_margin=1.0,
        gate_alpha=1e-9,
    ) as job:
        samples = toy_samples(400)
        add(job, samples[:240])
        _serve(job, [text for text, _ in samples[300:]])
        first = job.run("manual")  # the tiny model's zero-shot is chance: a proven teacher
        assert first.report["gate"]["lower_bound"] > 0
        assert first.report["self_training"]["pseudo_labeled"] > 0
        add(job, samples[240:250])
        second = job.run("manual")  # no better than current on the texts it never saw
        assert second.state == "promoted", second.reason
        gate = second.report["gate"]
        assert gate["evidence"]["design"] == "cross-validation"
        assert gate["lower_bound"] <= 0, second.reason
        assert second.report["self_training"]["pseudo_labeled"] == 0
        assert "did not beat current" in second.report["self_training"]["skipped"]


def test_on_small_evidence_a_candidate_worse_on_the_point_estimate_is_not_promoted(
    tmp_path, tiny_model_dir
):
    """A good adapter in service, then a run whose recipe is broken (a learning rate that
    wrecks the head): judged out of fold on the few texts current never learned from, it
    scores below current, and current stays."""
    with tiny_training_job(tmp_path, tiny_model_dir, validation_percent=5) as job:
        samples = toy_samples(260, seed=3)
        add(job, samples[:240])
        good = job.run("manual")
        assert good.state == "promoted", good.reason
        add(job, samples[240:])
        broken = TINY_TRAIN.model_copy(update={"head_fit_learning_rate": 50.0, "seed": 1})
        job.settings = job.settings.model_copy(
            update={"train": broken, "train_warm_start": "never"}
        )
        bad = job.run("manual")
        gate = bad.report["gate"]
        assert gate["evidence"]["design"] == "cross-validation"
        assert gate["validation_samples"] < 100  # the floor's texts and the 20 new ones
        assert gate["candidate_accuracy"] < gate["current_accuracy"], bad.reason
        assert bad.state == "rejected" and bad.candidate is None
        assert job.registry.current() == good.candidate


def test_where_lora_learns_nothing_the_head_recipe_is_chosen_and_served(tmp_path, tiny_model_dir):
    """Both recipes are cross-validated on the same folds; with LoRA and the head frozen in
    the LoRA recipe (learning rates of zero, no head fit), its folds answer as the start
    does, and the head kept close to its start wins. The adapter published is that head
    on the encoder as it was, and it answers as the run's recipe said."""
    frozen = TINY_TRAIN.model_copy(
        update={"head_fit_steps": 0, "learning_rate": 1e-9, "head_learning_rate": 0.0}
    )
    with tiny_training_job(tmp_path, tiny_model_dir, **SMALL) as job:
        job.settings = job.settings.model_copy(update={"train": frozen})
        add(job, toy_samples(240))
        run = job.run("manual")
        assert run.state == "promoted", run.reason
        assert run.report["recipe"] == "head"
        recipes = run.report["gate"]["evidence"]["recipes"]
        assert set(recipes) == {"head", "lora"}
        head, lora = recipes["head"], recipes["lora"]
        assert head["candidate_accuracy"] > lora["candidate_accuracy"] + 0.1
        assert lora["only_candidate_right"] == lora["only_current_right"] == 0  # the start
        # Holm: the first recipe to pass did so at 97.5%.
        assert head["promote"] and head["confidence"] == 0.975
        assert run.report["train"]["steps"] == 0
        assert run.report["train"]["stopped_by"].startswith("head prior")
        assert "head recipe" in run.report["self_training"]["skipped"]
        manifest = job.registry.get(run.candidate).manifest
        assert manifest["gate"]["evidence"]["recipe"] == "head"
        # The served adapter is better than the zero-shot start on the corrections.
        served = warm_model(job.settings, job.registry, job.labels(), run.candidate, "cpu")
        texts, labels = zip(*toy_samples(240))
        zero = warm_model(job.settings, job.registry, job.labels(), None, "cpu")
        assert accuracy(served.predictor, texts, labels) > accuracy(zero.predictor, texts, labels)
