"""The promotion gate's paired test, on answers made up to the case (no model needed)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from training.validation import Answers, Rule, decide, lower_bound, p_worse

GATE = Rule(alpha=0.25, margin=0.0, min_samples=20, noninferiority=0.02, confidence=0.95)


def answers(right: int, total: int, train_samples: int) -> Answers:
    hits = [True] * right + [False] * (total - right)
    return Answers(hits, train_samples)


def test_the_exact_mcnemar_tail():
    assert p_worse(0, 0) == 1.0
    assert p_worse(5, 0) == pytest.approx(1 / 32)
    assert p_worse(1, 0) == 0.5
    assert p_worse(0, 7) == 1.0
    assert p_worse(3, 1) == pytest.approx(5 / 16)  # P(X >= 3), X ~ Binomial(4, 1/2)
    assert p_worse(600, 400) < 1e-9  # large counts stay exact, no overflow


def test_one_text_worse_after_more_data_passes_once_the_holdout_is_large():
    # One text behind, the candidate trained on more data: on a few hundred texts the
    # bound clears the 2-point margin and it is promoted as before issue 33...
    gate = decide(answers(240, 300, 151), answers(239, 300, 386), GATE)
    assert gate.promote, gate.reason
    assert (gate.only_current_right, gate.only_candidate_right) == (1, 0)
    assert gate.p_worse == 0.5
    assert -0.02 < gate.lower_bound < 0
    assert "more data" in gate.reason
    # ...on 114 texts (0.7807 vs 0.7895, issue 20's run) it is no longer presumed good.
    small = decide(answers(90, 114, 151), answers(89, 114, 386), GATE)
    assert not small.promote and small.lower_bound < -0.02
    assert "not shown" in small.reason


def test_one_text_worse_on_no_more_data_is_rejected():
    gate = decide(answers(240, 300, 386), answers(239, 300, 386), GATE)  # bound passes
    assert not gate.promote
    assert "no more data" in gate.reason


def test_significantly_worse_is_rejected_whatever_the_data():
    # Candidate loses 12 texts current got right, wins 2: p ~ 0.006.
    current = Answers([True] * 12 + [False] * 2 + [True] * 86, 100)
    candidate = Answers([False] * 12 + [True] * 2 + [True] * 86, 10_000)
    gate = decide(current, candidate, GATE)
    assert not gate.promote
    assert gate.p_worse < 0.05
    assert "candidate is worse" in gate.reason


def test_six_lost_one_won_of_sixteen_is_worse_even_after_more_data():
    # A sentiment stream's second run: 8/16 against 13/16, p_worse = 0.0625.
    current = Answers([True] * 6 + [False] + [True] * 7 + [False] * 2, 11)
    candidate = Answers([False] * 6 + [True] + [True] * 7 + [False] * 2, 24)
    gate = decide(current, candidate, GATE)
    assert (gate.only_current_right, gate.only_candidate_right) == (6, 1)
    assert gate.p_worse == pytest.approx(0.0625)
    assert not gate.promote, gate.reason


def test_two_texts_behind_after_more_data_is_noise_on_hundreds_of_texts():
    gate = decide(answers(320, 400, 151), answers(318, 400, 386), GATE)
    assert gate.p_worse == 0.25  # 2 lost, 0 won
    assert gate.promote, gate.reason
    assert not decide(answers(90, 114, 151), answers(88, 114, 386), GATE).promote


def test_better_is_promoted_and_too_few_texts_never_are():
    assert decide(answers(80, 100, 50), answers(90, 100, 50), GATE).promote
    few = decide(answers(5, 10, 0), answers(10, 10, 20), GATE)
    assert not few.promote
    assert "validation samples" in few.reason


def test_a_margin_demands_a_point_estimate_gain():
    gate = decide(answers(160, 200, 50), answers(160, 200, 90), replace(GATE, margin=0.02))
    assert not gate.promote
    assert "margin" in gate.reason
    assert decide(answers(80, 100, 50), answers(83, 100, 90), replace(GATE, margin=0.02)).promote


def test_the_report_holds_the_evidence():
    report = decide(answers(80, 100, 50), answers(85, 100, 90), GATE).as_dict()
    assert report["test"].startswith("exact McNemar")
    assert report["current_accuracy"] == 0.8
    assert report["candidate_accuracy"] == 0.85
    assert (report["current_train_samples"], report["candidate_train_samples"]) == (50, 90)
    assert report["alpha"] == 0.25


def test_a_negative_margin_is_a_set_tolerance_but_never_overrides_the_test():
    # With the non-inferiority bound off (1): the operator's tolerance alone.
    tolerant = replace(GATE, margin=-0.05, noninferiority=1.0)
    assert decide(answers(90, 100, 50), answers(88, 100, 50), tolerant).promote  # p = 0.25
    by_margin = decide(answers(90, 100, 50), answers(84, 100, 50), replace(tolerant, alpha=1e-9))
    assert not by_margin.promote and "margin" in by_margin.reason
    worse = decide(answers(90, 100, 50), answers(80, 100, 50), replace(GATE, margin=-1))
    assert not worse.promote and worse.p_worse < 0.25


@pytest.mark.parametrize(
    ("losses", "wins", "samples", "low", "high"),
    [
        (0, 0, 13, -0.16, -0.15),  # the report's 13 texts: nothing bounds it near 0
        (2, 0, 13, -0.35, -0.34),  # the report's candidate, 7/13 vs 9/13
        (0, 0, 1_000, -0.003, -0.002),  # agreement on many texts bounds it tightly
        (11, 10, 300, -0.031, -0.027),  # one text behind on a few hundred
        (0, 20, 100, 0.12, 0.14),  # a clear win
    ],
)  # fmt: skip
def test_the_lower_bound_of_the_difference(losses, wins, samples, low, high):
    assert low <= lower_bound(losses, wins, samples) <= high


def test_the_issue_s_candidate_on_thirteen_texts_is_not_promoted():
    # Issue 33's first run: 7/13 against the zero-shot model's 9/13, trained on 7 of 20.
    report = decide(answers(9, 13, 0), answers(7, 13, 20), replace(GATE, min_samples=10))
    assert not report.promote
    assert report.lower_bound < -0.3  # far below any non-inferiority margin
    assert "not shown" in report.reason
    # Even agreeing on all 13 texts proves too little: the model in service stays.
    assert not decide(answers(9, 13, 0), answers(9, 13, 20), replace(GATE, min_samples=10)).promote


def test_a_clear_win_on_few_texts_is_promoted():
    # 20 out-of-fold answers: 8 only the candidate gets right, 1 only current.
    current = Answers([True] * 1 + [False] * 8 + [True] * 6 + [False] * 5, 0)
    candidate = Answers([False] * 1 + [True] * 8 + [True] * 6 + [False] * 5, 20)
    gate = decide(current, candidate, replace(GATE, min_samples=10))
    assert gate.promote, gate.reason
    assert gate.lower_bound > 0


def test_the_confidence_level_and_the_margin_set_the_bound():
    loose = replace(GATE, confidence=0.8)
    assert lower_bound(3, 1, 60, 0.8) > lower_bound(3, 1, 60, 0.95)
    assert decide(answers(50, 60, 0), answers(50, 60, 10), loose).lower_bound == lower_bound(
        0, 0, 60, 0.8
    )
    off = replace(GATE, noninferiority=1.0)
    assert decide(answers(9, 13, 0), answers(9, 13, 20), replace(off, min_samples=10)).promote
    report = decide(answers(9, 13, 0), answers(9, 13, 20), replace(GATE, min_samples=10))
    assert (report.confidence, report.noninferiority) == (0.95, 0.02)
