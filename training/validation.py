"""The promotion gate: a candidate must be at least as good as the adapter in service."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from training.predictor import Predictor


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

    def as_dict(self) -> dict:
        return asdict(self)


def accuracy(predictor: Predictor, texts: Sequence[str], labels: Sequence[str]) -> float:
    """Share of texts whose top label is the given one, through the serving Predictor."""
    if not texts:
        return 0.0
    predicted = predictor.predict(texts)
    return sum(p.label == label for p, label in zip(predicted, labels)) / len(texts)


def lacking_evidence(samples: int, min_samples: int) -> str | None:
    """Why `samples` validation samples cannot support a promotion, or None if they can."""
    if samples < min_samples:
        return f"only {samples} validation samples; promotion needs at least {min_samples}"
    return None


def decide(
    current: float, candidate: float, samples: int, *, margin: float, min_samples: int
) -> GateReport:
    """Promote when there is enough held-out evidence and candidate >= current + margin."""
    if lacking := lacking_evidence(samples, min_samples):
        promote, reason = False, lacking
    elif candidate + 1e-12 < current + margin:
        promote = False
        reason = f"candidate accuracy {candidate:.4f} is below current {current:.4f}" + (
            f" + margin {margin:.4f}" if margin else ""
        )
    else:
        promote = True
        reason = f"candidate accuracy {candidate:.4f} >= current {current:.4f}" + (
            f" + margin {margin:.4f}" if margin else ""
        )
    return GateReport(samples, current, candidate, margin, min_samples, promote, reason)
