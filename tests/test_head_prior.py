"""The head kept close to its start (training.head_prior) and the choice between recipes
(training.recipes.holm): real fits on small synthetic embeddings, no model needed."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from training import head_prior
from training.recipes import holm
from training.validation import Answers, Rule, decide

SCALE = 30.0


def blobs(n: int, seed: int, noise: float = 0.4):
    """Unit embeddings around two label directions (8 dims), and their labels."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.eye(8)[:2]
    labels = torch.arange(n) % 2
    points = centres[labels] + noise * torch.randn(n, 8, generator=generator)
    return F.normalize(points, dim=-1), labels


def start(rows: torch.Tensor) -> head_prior.Head:
    return head_prior.Head(F.normalize(rows, dim=-1) * SCALE, torch.zeros(len(rows)))


def accuracy(head, x, y) -> float:
    return float((head.logits(x).argmax(-1) == y).float().mean())


def moved(head, prior) -> float:
    return float((head.weight - prior.weight).norm())


def test_the_penalty_holds_the_rows_near_their_start_and_infinity_keeps_it():
    x, y = blobs(40, seed=0)
    prior = start(torch.randn(2, 8, generator=torch.Generator().manual_seed(1)))
    moves = [moved(head_prior.fit(prior, x, y, None, s, SCALE), prior) for s in (0, 4, 64)]
    assert moves[0] > moves[1] > moves[2] > 0
    kept = head_prior.fit(prior, x, y, None, math.inf, SCALE)
    assert torch.equal(kept.weight, prior.weight) and torch.equal(kept.bias, prior.bias)


def test_a_free_head_learns_the_task_from_a_wrong_start():
    x, y = blobs(60, seed=0)
    wrong = start(torch.eye(8)[[1, 0]])  # the rows swapped: zero-shot gets it backwards
    assert accuracy(wrong, x, y) < 0.2
    test_x, test_y = blobs(200, seed=5)
    head, strength = head_prior.fit_chosen(wrong, x, y, None, SCALE)
    assert strength < 64  # the corrections say the start is wrong: a weak prior wins
    assert accuracy(head, test_x, test_y) > 0.85


def test_a_right_start_is_kept_when_a_few_corrections_say_nothing_new():
    x, y = blobs(6, seed=0)
    right = start(torch.eye(8)[:2])
    assert accuracy(right, x, y) == 1.0  # the corrections confirm what it answers
    test_x, test_y = blobs(400, seed=7)
    zero_shot = accuracy(right, test_x, test_y)
    assert zero_shot > 0.9
    head, strength = head_prior.fit_chosen(right, x, y, None, SCALE)
    assert strength == math.inf  # nothing beats the start out of fold: ties keep it
    assert accuracy(head, test_x, test_y) == zero_shot


def test_inner_folds_are_balanced_and_seeded():
    folds = head_prior.inner_folds(23, 5)
    assert sorted(folds.count(k) for k in range(5)) == [4, 4, 5, 5, 5]
    assert folds == head_prior.inner_folds(23, 5) != head_prior.inner_folds(23, 5, seed=1)


RULE = Rule(alpha=0.25, margin=0.0, min_samples=1, noninferiority=0.02, confidence=0.95)


def gate(wins: int, losses: int, samples: int):
    """A judge whose candidate wins and loses these texts against current."""
    current = [False] * wins + [True] * losses + [True] * (samples - wins - losses)
    candidate = [True] * wins + [False] * losses + [True] * (samples - wins - losses)

    def judge(confidence: float):
        rule = Rule(**{**vars(RULE), "confidence": confidence})
        return decide(Answers(current, 0), Answers(candidate, 10), rule)

    return judge


def test_holm_asks_the_first_recipe_to_pass_at_the_stricter_level():
    # At 95% alone 3 wins of 40 pass (bound -1.4 points), at 97.5% they do not (-3.1).
    judges = {"head": gate(3, 0, 40), "lora": gate(3, 0, 40)}
    assert judges["head"](0.95).promote and not judges["head"](0.975).promote
    reports = holm(lambda recipe, c: judges[recipe](c), ("head", "lora"), 0.95)
    assert not any(report.promote for report in reports.values())
    assert {report.confidence for report in reports.values()} == {0.975}


def test_holm_judges_the_second_recipe_at_the_plain_level_once_one_passed():
    judges = {"head": gate(3, 0, 40), "lora": gate(12, 1, 40)}  # lora passes at 97.5%
    reports = holm(lambda recipe, c: judges[recipe](c), ("head", "lora"), 0.95)
    assert reports["lora"].promote and reports["lora"].confidence == 0.975
    assert reports["head"].promote and reports["head"].confidence == 0.95
