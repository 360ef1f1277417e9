"""How a run's evidence is planned: folds while corrections are few, a holdout later,
and the model in service never scored on a text it learned from (no model needed)."""

from __future__ import annotations

from types import SimpleNamespace

from tests.factories import toy_samples
from training.evidence import (
    CROSS_VALIDATION,
    HOLDOUT,
    Correction,
    Seen,
    cross_validate,
    fold_of,
    plan,
)
from training.split import holdout_percent, split_for, text_key

FLOOR = 5.0
PLAN = {"floor_percent": FLOOR, "folds": 5, "cv_below": 100, "cv_max_samples": 2_000}


def corrections(count: int) -> list[Correction]:
    """Toy corrections as the store hands them to a run: ids 1.., split by the floor."""
    first: dict[str, int] = {}
    stored = [
        SimpleNamespace(id=i, text=text, label=label, split=split_for(text_key(text), FLOOR))
        for i, (text, label) in enumerate(toy_samples(count), start=1)
    ]
    return [Correction.of(sample, first) for sample in stored]


def test_few_corrections_are_cross_validated_and_many_held_out():
    few = corrections(200)
    cv = plan(few, 200, None, **PLAN)
    assert cv.design == CROSS_VALIDATION
    assert cv.scored == few and cv.all == few  # every correction is scored out of fold
    assert cv.train == [c for c in few if c.split == "train"]  # the floor stays unseen
    assert cv.seen(200) == Seen(200, FLOOR)
    many = corrections(2_400)
    held = plan(many, 2_400, None, **PLAN)
    assert held.design == HOLDOUT
    assert len(held.scored) >= 100
    percent = holdout_percent(2_400, FLOOR)
    assert {c.id for c in held.train}.isdisjoint(c.id for c in held.scored)
    assert all(split_for(c.key, percent) == "train" for c in held.train)
    assert plan(many, 2_400, None, **{**PLAN, "cv_below": 10_000}).design == HOLDOUT  # cost cap
    assert plan(few, 200, None, **{**PLAN, "folds": 0}).design == HOLDOUT


def test_current_is_scored_only_on_texts_it_never_learned_from():
    data = corrections(300)
    current = Seen(200, FLOOR)  # a cross-validated adapter trained at 200
    cv = plan(data, 300, current, **PLAN)
    scored = {c.id for c in cv.scored}
    assert all(c.id in scored for c in data if c.id > 200)  # new since its run
    assert all((c.id in scored) == (c.split == "validation") for c in data if c.id <= 200)
    # A text it learned, corrected again to another label, is still a text it learned.
    text, label = data[0].text, data[0].label
    relabelled = Correction(301, text, "other", data[0].split, data[0].key, first_id=data[0].id)
    assert current.saw(relabelled) == (data[0].split == "train")
    assert not Seen(0, FLOOR).saw(relabelled) and label != "other"


def test_seen_widens_with_the_parent_and_reads_old_manifests():
    assert Seen(300, 10.0).and_parent(Seen(200, FLOOR)) == Seen(300, FLOOR)
    assert Seen(300, 10.0).and_parent(None) == Seen(300, 10.0)
    assert Seen.of_manifest({"seen": {"cursor": 40, "percent": 30}}, FLOOR) == Seen(40, 30.0)
    # Before the record: the run held out exactly its early holdout and trained on the rest.
    assert Seen.of_manifest({"data_cursor": 400}, FLOOR) == Seen(400, holdout_percent(400, FLOOR))


def test_cross_validation_never_answers_a_text_it_trained_on():
    data = corrections(120)
    cv = plan(data, 120, Seen(60, FLOOR), **PLAN)
    calls = []

    def fit_and_answer(texts, labels, judged, gold):
        assert set(texts).isdisjoint(judged)  # out of fold
        assert len(texts) == len(labels) and len(judged) == len(gold)
        calls.append(len(judged))
        return [i % 2 == 0 for i in range(len(judged))]

    answers, folds = cross_validate(cv, 5, fit_and_answer)
    assert set(answers) == {c.id for c in cv.scored}
    assert sum(calls) == len(cv.scored) == sum(f["scored"] for f in folds)
    assert [f["fold"] for f in folds] == list(range(5))
    assert sum(f["train"] for f in folds) == 4 * len(data)  # each text in k-1 training sets
    keys = [c.key for c in data]
    assert [fold_of(k, 5) for k in keys] == [fold_of(k, 5) for k in keys]  # stable


def test_a_fold_with_nothing_to_score_is_not_trained():
    data = corrections(40)
    only = [c for c in data if fold_of(c.key, 5) == 0]
    cv = plan(data, 40, None, **PLAN)
    cv.scored = only
    trained = []
    cross_validate(cv, 5, lambda texts, labels, j, gold: trained.append(j) or [True] * len(j))
    assert len(trained) == 1 and trained[0] == [c.text for c in only]
