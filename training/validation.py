"""The promotion gate: a paired test of candidate against the adapter in service.

Both models answer the same held-out texts, so the evidence is paired: only the texts
one gets right and the other wrong (the discordant pairs) say anything about which is
better. The gate runs the exact McNemar test on them (a one-sided binomial test of the
candidate's losses among the discordant pairs) and decides:

- fewer held-out texts than the minimum: no promotion (nothing to test on);
- the evidence says the candidate is worse (p < alpha): rejected, always. alpha is 0.25
  by default, not the textbook 0.05: promoting a worse adapter costs every user until the
  next run, rejecting a better one only waits for that run (at 0.05 a sentiment stream
  promoted a candidate that lost 6 texts and won 1 of 16, p = 0.06, and served 5 points
  worse). One text behind is p >= 0.5 however many texts, two behind 0.25-0.5, three
  0.125-0.35;
- the candidate is at least as accurate: promoted;
- it is less accurate, but within noise: promoted only if it learned from more
  corrections than the adapter in service (the data is the reason to expect it better,
  and the test finds no evidence against it), rejected otherwise.

A margin other than 0 replaces the last three rules with candidate >= current + margin on
the point estimate (above 0: every promotion an improvement; below 0: a set tolerance);
a candidate the test finds worse is still rejected.

Every report also records a one-sided 95% lower confidence bound of candidate minus current
accuracy (`lower_bound`), the evidence a non-inferiority rule would use (issue 33). It is
recorded, not yet part of the decision.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from training.predictor import Predictor

TEST = "exact McNemar, one-sided (is the candidate worse?)"
BOUND = "Bonett-Price adjusted Wald, paired, one-sided 95%"
Z_95_ONE_SIDED = 1.6448536269514722  # the standard normal's 95th percentile


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
    lower_bound: float | None = None  # candidate - current accuracy, 95% lower bound (BOUND)

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


def lower_bound(losses: int, wins: int, samples: int) -> float:
    """One-sided 95% lower bound of candidate minus current accuracy on paired answers.

    Bonett & Price (2012), the adjusted Wald interval for paired proportions: a closed form
    that stays honest with no discordant pair at all (13 texts both models agree on still
    bound the difference only to about -15 points), where the exact conditional bound
    would claim 0. scipy has no paired-difference interval, and this is four lines.
    """
    wins_, losses_ = (wins + 1) / (samples + 2), (losses + 1) / (samples + 2)
    difference = wins_ - losses_
    variance = (wins_ + losses_ - difference**2) / (samples + 2)
    return difference - Z_95_ONE_SIDED * math.sqrt(variance)


@dataclass(frozen=True)
class Answers:
    """One model as the gate sees it: right or wrong on each held-out text, and its data."""

    hits: Sequence[bool]
    train_samples: int


def decide(
    current: Answers, candidate: Answers, *, alpha: float, margin: float, min_samples: int
) -> GateReport:
    """Promote or reject `candidate` against `current` on the same held-out texts."""
    samples = len(candidate.hits)
    assert len(current.hits) == samples, "the gate compares answers on the same texts"
    current_acc = sum(current.hits) / samples if samples else None
    candidate_acc = sum(candidate.hits) / samples if samples else None
    losses = sum(a and not b for a, b in zip(current.hits, candidate.hits))
    wins = sum(b and not a for a, b in zip(current.hits, candidate.hits))
    p = p_worse(losses, wins)
    promote, reason = _verdict(
        samples,
        losses,
        wins,
        p,
        current,
        candidate,
        alpha=alpha,
        margin=margin,
        min_samples=min_samples,
    )
    return GateReport(
        validation_samples=samples,
        current_accuracy=current_acc,
        candidate_accuracy=candidate_acc,
        margin=margin,
        min_samples=min_samples,
        promote=promote,
        reason=reason,
        test=TEST,
        only_current_right=losses,
        only_candidate_right=wins,
        p_worse=p,
        alpha=alpha,
        current_train_samples=current.train_samples,
        candidate_train_samples=candidate.train_samples,
        lower_bound=lower_bound(losses, wins, samples) if samples else None,
    )


def _verdict(samples, losses, wins, p, current, candidate, *, alpha, margin, min_samples):
    """(promote, reason) by the rules of the module docstring."""
    if lacking := lacking_evidence(samples, min_samples):
        return False, lacking
    score = (
        f"candidate {sum(candidate.hits)}/{samples} vs current {sum(current.hits)}/{samples}"
        f" ({wins} texts only the candidate gets right, {losses} only current; p_worse={p:.3g})"
    )
    if p < alpha:
        return False, f"the evidence says the candidate is worse (p_worse < {alpha:g}): {score}"
    if margin:  # the operator's own rule on the point estimate, either sign
        if (wins - losses) / samples + 1e-12 < margin:
            return False, f"candidate is not at current + the margin {margin:.4f}: {score}"
        return True, f"candidate is at least current + the margin {margin:.4f}: {score}"
    if wins >= losses:
        return True, f"candidate is at least as accurate: {score}"
    if candidate.train_samples > current.train_samples:
        more = f"{candidate.train_samples} corrections vs {current.train_samples}"
        return (
            True,
            f"candidate is behind within noise and learned from more data ({more}): {score}",
        )
    return False, f"candidate is behind and learned from no more data than current: {score}"
