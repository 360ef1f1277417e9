"""The promotion gate: a paired test of candidate against the adapter in service.

Both models answer the same texts neither was trained on, so the evidence is paired: only
the texts one gets right and the other wrong (the discordant pairs) say anything about
which is better. The gate decides, in this order:

- fewer scored texts than the minimum: no promotion (nothing to test on);
- the exact McNemar test (one-sided binomial test of the candidate's losses among the
  discordant pairs) says the candidate is worse (p < alpha): rejected, always;
- non-inferiority (invariant 4): the one-sided lower confidence bound of candidate minus
  current accuracy (Bonett-Price, paired) must be at least -`noninferiority`, 2 points by
  default. On 13 texts that bound is about -15 points even when both models agree on every
  text, so a small validation set can promote only a candidate that wins clearly; on a few
  hundred texts a candidate one text behind passes. Nothing is promoted on a presumption;
- an operator's `margin` other than 0 also demands candidate >= current + margin on the
  point estimate (above 0: every promotion an improvement; below 0: a set tolerance);
- without a margin, a candidate behind on the point estimate is promoted only if it
  learned from more corrections than the adapter in service (the reason to expect it
  better); at least as accurate, it is promoted.

While corrections are few the texts are the out-of-fold answers of a cross-validation over
every correction (training.evidence), later a held-out share of them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist

from training.predictor import Predictor

TEST = "exact McNemar, one-sided (is the candidate worse?)"
BOUND = "Bonett-Price adjusted Wald, paired, one-sided"


@dataclass(frozen=True)
class GateReport:
    """The evidence a promotion decision rests on; stored with the run either way."""

    validation_samples: int
    current_accuracy: float | None
    candidate_accuracy: float | None
    margin: float
    min_samples: int
    promote: bool
    reason: str
    # The paired test (None when there was nothing to test).
    test: str | None = None
    only_current_right: int | None = None  # discordant: current right, candidate wrong
    only_candidate_right: int | None = None  # discordant: candidate right, current wrong
    p_worse: float | None = None  # P(losses this many or more | equally good)
    alpha: float | None = None
    current_train_samples: int | None = None
    candidate_train_samples: int | None = None
    lower_bound: float | None = None  # candidate - current accuracy, lower bound (BOUND)
    confidence: float | None = None  # of that bound, one-sided
    noninferiority: float | None = None  # the bound must be at least minus this
    evidence: dict | None = None  # how the answers were obtained (folds or a holdout)

    def as_dict(self) -> dict:
        return asdict(self)


def hits(predictor: Predictor, texts: Sequence[str], labels: Sequence[str]) -> list[bool]:
    """Whether the top label of each text is the given one, through the serving Predictor."""
    if not texts:
        return []
    predicted = predictor.predict(texts)
    return [p.label == label for p, label in zip(predicted, labels)]


def accuracy(predictor: Predictor, texts: Sequence[str], labels: Sequence[str]) -> float:
    """Share of texts whose top label is the given one."""
    right = hits(predictor, texts, labels)
    return sum(right) / len(right) if right else 0.0


def lacking_evidence(samples: int, min_samples: int) -> str | None:
    """Why `samples` validation samples cannot support a promotion, or None if they can."""
    if samples < min_samples:
        return f"only {samples} validation samples; promotion needs at least {min_samples}"
    return None


def p_worse(only_current: int, only_candidate: int) -> float:
    """One-sided exact McNemar p-value: P(X >= only_current), X ~ Binomial(discordant, 1/2)."""
    discordant = only_current + only_candidate
    if discordant == 0:
        return 1.0
    tail = sum(math.comb(discordant, k) for k in range(only_current, discordant + 1))
    return tail / 2**discordant  # exact integers, one correctly rounded division


def lower_bound(losses: int, wins: int, samples: int, confidence: float = 0.95) -> float:
    """One-sided lower confidence bound of candidate minus current accuracy on paired answers.

    Bonett & Price (2012), the adjusted Wald interval for paired proportions: a closed form
    that stays honest with no discordant pair at all (13 texts both models agree on still
    bound the difference only to about -15 points), where the exact conditional bound
    would claim 0. scipy has no paired-difference interval, and this is four lines.
    """
    wins_, losses_ = (wins + 1) / (samples + 2), (losses + 1) / (samples + 2)
    difference = wins_ - losses_
    variance = (wins_ + losses_ - difference**2) / (samples + 2)
    return difference - NormalDist().inv_cdf(confidence) * math.sqrt(variance)


@dataclass(frozen=True)
class Answers:
    """One model as the gate sees it: right or wrong on each held-out text, and its data."""

    hits: Sequence[bool]
    train_samples: int


@dataclass(frozen=True)
class Rule:
    """The gate's settings (JobSettings: gate_alpha, promotion_margin, and so on)."""

    alpha: float
    margin: float
    min_samples: int
    noninferiority: float
    confidence: float


def decide(current: Answers, candidate: Answers, rule: Rule, evidence: dict | None = None):
    """Promote or reject `candidate` against `current` on the same unseen texts."""
    samples = len(candidate.hits)
    assert len(current.hits) == samples, "the gate compares answers on the same texts"
    losses = sum(a and not b for a, b in zip(current.hits, candidate.hits))
    wins = sum(b and not a for a, b in zip(current.hits, candidate.hits))
    p = p_worse(losses, wins)
    bound = lower_bound(losses, wins, samples, rule.confidence) if samples else None
    promote, reason = _verdict(samples, losses, wins, p, bound, current, candidate, rule)
    return GateReport(
        validation_samples=samples,
        current_accuracy=sum(current.hits) / samples if samples else None,
        candidate_accuracy=sum(candidate.hits) / samples if samples else None,
        margin=rule.margin,
        min_samples=rule.min_samples,
        promote=promote,
        reason=reason,
        test=TEST,
        only_current_right=losses,
        only_candidate_right=wins,
        p_worse=p,
        alpha=rule.alpha,
        current_train_samples=current.train_samples,
        candidate_train_samples=candidate.train_samples,
        lower_bound=bound,
        confidence=rule.confidence,
        noninferiority=rule.noninferiority,
        evidence=evidence,
    )


def _verdict(samples, losses, wins, p, bound, current, candidate, rule: Rule):
    """(promote, reason) by the rules of the module docstring."""
    if lacking := lacking_evidence(samples, rule.min_samples):
        return False, lacking
    score = (
        f"candidate {sum(candidate.hits)}/{samples} vs current {sum(current.hits)}/{samples}"
        f" ({wins} texts only the candidate gets right, {losses} only current; p_worse={p:.3g},"
        f" difference >= {bound:+.4f} at {rule.confidence * 100:g}%)"
    )
    if p < rule.alpha:
        worse = f"the evidence says the candidate is worse (p_worse < {rule.alpha:g})"
        return False, f"{worse}: {score}"
    if bound + 1e-12 < -rule.noninferiority:
        return False, (
            f"not shown to be at most {rule.noninferiority:.4f} worse (too little evidence"
            f" or a likely loss): {score}"
        )
    if rule.margin:  # the operator's own rule on the point estimate, either sign
        if (wins - losses) / samples + 1e-12 < rule.margin:
            return False, f"candidate is not at current + the margin {rule.margin:.4f}: {score}"
        return True, f"candidate is at least current + the margin {rule.margin:.4f}: {score}"
    if wins >= losses:
        return True, f"candidate is at least as accurate: {score}"
    if candidate.train_samples > current.train_samples:
        more = f"{candidate.train_samples} corrections vs {current.train_samples}"
        return True, f"candidate is non-inferior and learned from more data ({more}): {score}"
    return False, f"candidate is behind and learned from no more data than current: {score}"
