"""What a candidate is judged on: texts the adapter in service never learned from.

Two designs, chosen per run (`plan`):

- **holdout**: the run holds out a share of the corrections by text hash (the store's
  validation split, and while data is scarce more: training.split.holdout_percent) and
  trains on the rest; the gate scores both models on the held-out texts.
- **cross-validation** while that holdout would give the gate fewer than
  `gate_cv_below` texts: every correction is scored out of fold. The corrections are
  split into k folds by text hash; for each fold the run trains the candidate's recipe
  (same start, same settings) on the other folds and answers the fold's texts, and the
  model in service answers the same texts. If the recipe passes the gate, the candidate
  is trained on every correction outside the store's validation split (those stay unseen
  so the later holdout gates keep a floor of texts no adapter learned from).

Why cross-validation rather than a bigger holdout at the start: on 20 corrections a
holdout of 10 bounds the difference only to about -20 points even when the two models
agree on all 10 (training.validation.lower_bound), so the gate either promotes on a
presumption or never promotes; out-of-fold answers on all 20 bound it twice as tightly
and the candidate still learns from all of them. The price is k extra trainings per run,
hence the cap `gate_cv_max_samples`.

Either way the model in service is scored only on texts it did not learn from: each
adapter's manifest records which corrections it saw (`Seen`), and a text it saw is left
out of the comparison (its answers on it would flatter it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from training.split import holdout_percent, split_for, text_key

HOLDOUT, CROSS_VALIDATION = "holdout", "cross-validation"


@dataclass(frozen=True)
class Correction:
    """An active correction as a run sees it."""

    id: int
    text: str
    label: str
    split: str  # the store's split: "train" or "validation" (never trained on)
    key: str  # training.split.text_key of the text
    first_id: int  # the text's first correction (a relabelled text keeps it)

    @classmethod
    def of(cls, sample, first: dict[str, int]) -> Correction:
        """`sample` as a run sees it; `first` collects each text's first correction id
        (fed the store's samples in id order, superseded ones included)."""
        key = text_key(sample.text)
        first_id = first.setdefault(key, sample.id)
        return cls(sample.id, sample.text, sample.label, sample.split, key, first_id)


@dataclass(frozen=True)
class Seen:
    """The corrections an adapter learned from: ids up to `cursor` in the store's train
    split whose text hash falls in the train buckets of `percent` (its run's holdout)."""

    cursor: int
    percent: float

    def saw(self, sample: Correction) -> bool:
        """Whether the adapter learned from this text, under this label or an older one
        (its answers on a text it learned are no evidence, whichever label it learned)."""
        return (
            sample.first_id <= self.cursor
            and sample.split == "train"
            and split_for(sample.key, self.percent) == "train"
        )

    def and_parent(self, parent: Seen | None) -> Seen:
        """What a run continuing `parent` has seen: its own corrections and the parent's
        (the buckets only widen as the percent falls, so one pair covers both)."""
        if parent is None:
            return self
        return Seen(max(self.cursor, parent.cursor), min(self.percent, parent.percent))

    def as_dict(self) -> dict:
        return {"cursor": self.cursor, "percent": self.percent}

    @classmethod
    def of_manifest(cls, manifest: dict, floor_percent: float) -> Seen:
        """From a manifest; one written before `seen` was recorded held out exactly the
        early holdout of its data cursor (and trained on the rest)."""
        if seen := manifest.get("seen"):
            return cls(int(seen["cursor"]), float(seen["percent"]))
        cursor = int(manifest.get("data_cursor") or 0)
        return cls(cursor, holdout_percent(cursor, floor_percent))


@dataclass
class Plan:
    """A run's data: what the candidate trains on and how it is judged."""

    design: str  # HOLDOUT or CROSS_VALIDATION
    train: list[Correction]
    scored: list[Correction]  # texts both models answer for the gate (unseen by current)
    all: list[Correction]  # every correction of the run: the folds' material
    percent: float  # the holdout share the candidate was trained without
    current: Seen | None  # what the model in service learned from (None: zero-shot)

    def seen(self, cursor: int) -> Seen:
        return Seen(cursor, self.percent)


def plan(
    corrections: Sequence[Correction],
    cursor: int,
    current: Seen | None,
    *,
    floor_percent: float,
    folds: int,
    cv_below: int,
    cv_max_samples: int,
) -> Plan:
    """Holdout when it gives the gate at least `cv_below` unseen texts, cross-validation
    while it would not (and corrections are at most `cv_max_samples`)."""
    unseen = [c for c in corrections if current is None or not current.saw(c)]
    percent = holdout_percent(cursor, floor_percent)
    held = {c.id for c in corrections if c.split != "train" or split_for(c.key, percent) != "train"}
    scored = [c for c in unseen if c.id in held]
    use_cv = folds >= 2 and len(scored) < cv_below and len(corrections) <= cv_max_samples
    if not use_cv:
        train = [c for c in corrections if c.id not in held]
        return Plan(HOLDOUT, train, scored, list(corrections), percent, current)
    train = [c for c in corrections if c.split == "train"]
    return Plan(CROSS_VALIDATION, train, unseen, list(corrections), floor_percent, current)


def fold_of(key: str, folds: int) -> int:
    """A text's fold: by its hash (other digits than the split's), stable across runs."""
    return int(key[8:16], 16) % folds


# (train texts, train labels, texts to answer, their labels) -> right or wrong on each
FitAndAnswer = Callable[[list[str], list[str], list[str], list[str]], list[bool]]


def cross_validate(
    plan_: Plan, folds: int, fit_and_answer: FitAndAnswer
) -> tuple[dict[int, bool], list[dict]]:
    """Out-of-fold answers of the recipe on every scored correction, by id, and per fold
    its sizes and accuracy. A fold with no scored text is not trained."""
    scored = {c.id for c in plan_.scored}
    answers: dict[int, bool] = {}
    report = []
    for fold in range(folds):
        held = [c for c in plan_.all if fold_of(c.key, folds) == fold]
        rest = [c for c in plan_.all if fold_of(c.key, folds) != fold]
        judged = [c for c in held if c.id in scored]
        if not judged or not rest:
            report.append({"fold": fold, "train": len(rest), "scored": 0})
            continue
        right = fit_and_answer(
            [c.text for c in rest], [c.label for c in rest],
            [c.text for c in judged], [c.label for c in judged],
        )  # fmt: skip
        answers.update(zip((c.id for c in judged), right))
        accuracy = sum(right) / len(right)
        report.append(
            {"fold": fold, "train": len(rest), "scored": len(judged), "accuracy": accuracy}
        )
    return answers, report
