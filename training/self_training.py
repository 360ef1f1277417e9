"""Self-training: served texts nobody corrected, labeled by a model trained on the corrections.

The service remembers every text it classifies (the prediction log the review queue reads);
most of them never get a correction. A run first trains on its corrections as always; that
model (the teacher) labels the newest of those uncorrected texts, and the ones it gives at
least `threshold` probability join the corrections to train the candidate (the student)
again from the same start. With more than one round (`LIVETUNE_SELF_TRAINING_ROUNDS`)
that student labels the texts again for the next. Only the last student meets the gate.

What keeps it honest:
- the teacher learned from this run's corrections: never the zero-shot head (sure of many
  wrong labels), nor an adapter in service that learned from far fewer corrections (a
  teacher trained on half the corrections made its student worse than no self-training);
- a text in the run's held-out share (the same hash split as the corrections) is never
  pseudo-labeled, so the gate still scores both sides on texts neither trained on
  (invariant 4), and the gate decides on corrections only;
- a text with an active correction is left to its correction (the review store's open
  texts are exactly those).

Measured on the online stream and with `benchmarks/recipe_probe.py --teacher`:
docs/experiments/self-training.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from training.predictor import Predictor
from training.split import split_for
from training.store import FeedbackStore
from training.store.review import open_review_store


@dataclass
class PseudoLabels:
    texts: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    pool: int = 0  # uncorrected texts looked at (outside the held-out share)
    teacher_seconds: float = 0.0  # training the teachers (every round's but the last)
    rounds: int = 0  # students trained; each round's student taught the next

    def report(self, threshold: float) -> dict:
        return {
            "pool": self.pool,
            "pseudo_labeled": len(self.texts),
            "threshold": threshold,
            "teacher_seconds": round(self.teacher_seconds, 3),
            "rounds": self.rounds,
        }


def open_texts(store: FeedbackStore, *, pool: int, max_age_s: float) -> list[tuple[str, str]]:
    """(text, text key) of the newest `pool` remembered predictions no correction holds."""
    review = open_review_store(store, max_age_s=max_age_s)
    try:
        found = review.candidates(pool=pool, label_count=2)
    finally:
        review.close()
    return [(c.text, c.text_key) for c in found]


def pseudo_label(
    teacher: Predictor,
    texts: list[tuple[str, str]],
    *,
    threshold: float,
    holdout_percent: float,
) -> PseudoLabels:
    """The texts outside the held-out share that `teacher` labels with >= `threshold`."""
    kept = [text for text, key in texts if split_for(key, holdout_percent) == "train"]
    result = PseudoLabels(pool=len(kept))
    if not kept:
        return result
    probabilities = teacher.probabilities(kept)
    confidence, best = probabilities.max(-1)
    names = [label.name for label in teacher.labels]
    for text, p, i in zip(kept, confidence.tolist(), best.tolist()):
        if p >= threshold:
            result.texts.append(text)
            result.labels.append(names[i])
    return result
