"""The recipes a run with cross-validated evidence weighs, and the choice between them.

- `lora`: the trainer's recipe (training.trainer): the head fitted on frozen embeddings,
  then LoRA on the encoder with the head. It learns most, and with a handful of
  corrections a label it can land below the answers it started from.
- `head`: the encoder as it is, the head refitted close to its start
  (training.head_prior). It keeps what the model in service knows and moves only where
  the corrections insist: seconds to cross-validate, as the embeddings are computed once.

Both are cross-validated on the same folds against the model in service, and each must
pass the gate on its own out-of-fold answers. Two recipes judged on the same evidence
are two chances for a worse one to pass, so the bounds follow Holm's procedure: the
first to pass does so at confidence 1 - (1 - c) / 2, the other then at c; the chance that
a recipe worse by more than the margin is promoted stays within 1 - c. Of the recipes
that pass, the one with more right answers out of fold is trained on every correction
(a tie goes to `head`, which moves the model in service less).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from training import evidence, head_prior
from training.evidence import Plan
from training.predictor import Predictor
from training.trainer import Trainer, TrainResult, targets_and_weights
from training.validation import Answers, GateReport, Rule, decide, hits

LORA, HEAD = "lora", "head"


@dataclass
class Choice:
    """The recipe to train (None: none passed), the gate report that says so, and the
    head recipe with the corrections' embeddings (reused if it is the one trained)."""

    recipe: str | None
    gate: GateReport
    head: HeadRecipe


class HeadRecipe:
    """The `head` recipe on one run's corrections: each text embedded once by the start
    model (its encoder is not trained), for the folds' fits and the final one alike."""

    def __init__(self, start: Predictor, texts: Sequence[str], names, balance: bool):
        head = start.model.head
        self.prior = head_prior.Head(head.weight.detach().float().clone(),
                                     head.bias.detach().float().clone())  # fmt: skip
        self.scale, self.names, self.balance = head.scale, list(names), balance
        self.row = {text: i for i, text in enumerate(texts)}
        self.embeddings = start.embeddings(texts).clone()

    def _fit(self, texts, labels):
        """(head, chosen strength, the texts' embeddings, targets, weights)."""
        targets, weights = targets_and_weights(labels, self.names, self.balance)
        rows = self.embeddings[[self.row[t] for t in texts]]
        head, strength = head_prior.fit_chosen(self.prior, rows, targets, weights, self.scale)
        return head, strength, rows, targets, weights

    def fit_and_answer(self, texts, labels, judged, gold) -> list[bool]:
        """One fold (training.evidence.FitAndAnswer)."""
        head = self._fit(texts, labels)[0]
        answers = head.logits(self.embeddings[[self.row[t] for t in judged]]).argmax(-1)
        return [self.names[a] == label for a, label in zip(answers.tolist(), gold)]

    def train(self, model, texts, labels) -> TrainResult:
        """The recipe on `model` (the start it was built from), in place."""
        started = time.perf_counter()
        head, strength, rows, targets, weights = self._fit(texts, labels)
        with torch.no_grad():
            model.head.weight.copy_(head.weight.to(model.head.weight.dtype))
            model.head.bias.copy_(head.bias.to(model.head.bias.dtype))
        loss = F.cross_entropy(head.logits(rows), targets, weight=weights).item()
        seconds = time.perf_counter() - started
        return TrainResult(
            steps=0, epochs=0.0, samples_seen=len(texts), seconds=seconds,
            head_fit_seconds=seconds, final_loss=loss, stopped_by=f"head prior {strength:g}",
        )  # fmt: skip


def lora_answers(plan: Plan, names, k: int, config, restart: Callable):
    """The `lora` recipe's out-of-fold answers: k trainings from the same start."""

    def fit_and_answer(texts, labels, judged, gold):
        fold = restart()
        model, tokenizer = fold.predictor.model, fold.predictor.tokenizer
        Trainer(model, tokenizer, names, config).train(texts, labels)
        return hits(fold.predictor, judged, gold)

    return evidence.cross_validate(plan, k, fit_and_answer)


def holm(judge: Callable[[str, float], GateReport], recipes, confidence: float):
    """Each recipe's gate report under Holm's step-down procedure (module docstring)."""
    strict = 1 - (1 - confidence) / len(recipes)
    reports = {recipe: judge(recipe, strict) for recipe in recipes}
    if any(report.promote for report in reports.values()) and len(recipes) > 1:
        for recipe in recipes:
            if not reports[recipe].promote:
                reports[recipe] = judge(recipe, confidence)
    return reports


def choose(
    plan: Plan, names, current: Answers, rule: Rule, config, k: int, start: Predictor,
    restart: Callable,
) -> Choice:  # fmt: skip
    """Cross-validate both recipes from `start` (which they leave as it is; `restart()`
    makes a copy of it to train) against the model in service, and pick one (or none)."""
    head = HeadRecipe(start, [c.text for c in plan.all], names, config.class_balance)
    answers = {
        HEAD: evidence.cross_validate(plan, k, head.fit_and_answer),
        LORA: lora_answers(plan, names, k, config, restart),
    }

    def judge(recipe: str, confidence: float) -> GateReport:
        right, folds = answers[recipe]
        candidate = Answers([right[c.id] for c in plan.scored], len(plan.train))
        record = {"design": plan.design, "recipe": recipe, "folds": folds, "k": k}
        return decide(current, candidate, dataclasses.replace(rule, confidence=confidence), record)

    reports = holm(judge, (HEAD, LORA), rule.confidence)
    passed = [recipe for recipe in (HEAD, LORA) if reports[recipe].promote]
    if passed:
        recipe = max(passed, key=lambda r: (reports[r].candidate_accuracy, r == HEAD))
    else:  # report the recipe that came closest
        recipe = max(reports, key=lambda r: (reports[r].lower_bound, r == HEAD))
    gate = reports[recipe]
    others = {r: _summary(reports[r]) for r in reports}
    gate = dataclasses.replace(gate, evidence={**gate.evidence, "recipes": others})
    return Choice(recipe if passed else None, gate, head)


def _summary(report: GateReport) -> dict:
    keys = ("promote", "candidate_accuracy", "only_candidate_right", "only_current_right",
            "lower_bound", "confidence", "reason")  # fmt: skip
    return {key: getattr(report, key) for key in keys}
