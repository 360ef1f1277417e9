"""Which served predictions a reviewer should label first.

Uncertainty under the adapter in service (the margin between the two most probable labels,
or the entropy), near-duplicate texts collapsed, predicted labels kept diverse and a share
picked at random. Plain functions over scored candidates: the service ranks with them and
`benchmarks/active.py` compares the strategies with the very same code.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from training.split import normalise

# margin: smallest p1 - p2 first; entropy: highest entropy first; diverse: margin order,
# taken in turns across the predicted labels so one confusable label cannot fill a batch.
STRATEGIES = ("margin", "entropy", "diverse")
NEAR_DUPLICATE = 0.8  # Jaccard similarity of word sets above which two texts are one
_WORDS = re.compile(r"[^\W\d_]+|\d+")


@dataclass(frozen=True)
class Candidate:
    """A remembered prediction, scored by the adapter that last scored its text."""

    prediction_id: str
    text: str
    text_key: str
    served_at: float
    adapter: str  # the adapter of `top`: the one that served it, or the last to re-score it
    top: tuple[tuple[str, float], ...]  # most probable first
    margin: float  # p1 - p2
    entropy: float  # of the whole distribution, in [0, 1] (divided by log of the label count)

    @property
    def label(self) -> str:
        return self.top[0][0] if self.top else ""


def scores_of(probabilities: Sequence[float], labels: Sequence[str], top_k: int) -> dict:
    """top, margin and entropy of one full distribution over `labels`."""
    order = sorted(range(len(labels)), key=lambda i: probabilities[i], reverse=True)
    top = tuple((labels[i], float(probabilities[i])) for i in order[:top_k])
    second = probabilities[order[1]] if len(order) > 1 else 0.0
    entropy = -sum(p * math.log(p) for p in probabilities if p > 0)
    return {
        "top": top,
        "margin": float(probabilities[order[0]] - second),
        "entropy": entropy / math.log(len(labels)) if len(labels) > 1 else 0.0,
    }


def estimate_from_top(top: Sequence[tuple[str, float]], label_count: int) -> tuple[float, float]:
    """(margin, entropy) from the served top-k alone: the mass left over is taken as spread
    evenly over the other labels, which is what a log of top-k pairs allows."""
    if not top:
        return 1.0, 0.0
    scores = [score for _, score in top]
    margin = scores[0] - (scores[1] if len(scores) > 1 else 0.0)
    rest, others = max(0.0, 1.0 - sum(scores)), max(label_count - len(scores), 0)
    spread = [rest / others] * others if others else []
    entropy = -sum(p * math.log(p) for p in [*scores, *spread] if p > 0)
    return margin, entropy / math.log(label_count) if label_count > 1 else 0.0


def usefulness(candidate: Candidate, strategy: str) -> float:
    """How much a label of `candidate` should teach: higher first."""
    return candidate.entropy if strategy == "entropy" else 1.0 - candidate.margin


def rank(candidates: Sequence[Candidate], strategy: str) -> list[Candidate]:
    """Most useful first, by `strategy` (one of STRATEGIES)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; one of {', '.join(STRATEGIES)}")
    ranked = sorted(candidates, key=lambda c: usefulness(c, strategy), reverse=True)
    return by_turns(ranked) if strategy == "diverse" else ranked


def by_turns(ranked: Sequence[Candidate]) -> list[Candidate]:
    """The most useful of each predicted label, then the second of each, and so on; labels
    in the order of their most useful candidate."""
    groups: dict[str, list[Candidate]] = {}
    for candidate in ranked:
        groups.setdefault(candidate.label, []).append(candidate)
    turns = []
    for depth in range(max((len(g) for g in groups.values()), default=0)):
        turns.extend(group[depth] for group in groups.values() if depth < len(group))
    return turns


def words(text: str) -> frozenset[str]:
    """A text's words, case-folded, every number the same word: "card 1234" ~ "card 99"."""
    return frozenset("#" if w.isdigit() else w for w in _WORDS.findall(normalise(text)))


def select(
    candidates: Sequence[Candidate],
    count: int,
    strategy: str,
    random_share: float = 0.0,
    rng: random.Random | None = None,
) -> list[Candidate]:
    """Up to `count` candidates, most useful first, no two near-duplicates; a
    `random_share` of them drawn uniformly from the rest (after the ranked ones).

    The near-duplicate check compares each pick with those already picked (a few hundred
    at most), so plain Jaccard over word sets is enough; MinHash indexes pay off only for
    corpora far larger than one batch."""
    rng = rng or random.Random()
    ranked = rank(candidates, strategy)
    randoms = round(count * random_share)
    picked: list[Candidate] = []
    seen: list[frozenset[str]] = []
    _take(ranked, count - randoms, picked, seen)
    chosen = {c.prediction_id for c in picked}
    rest = [c for c in ranked if c.prediction_id not in chosen]
    rng.shuffle(rest)
    _take(rest, count - len(picked), picked, seen)
    return picked


def _take(pool: Sequence[Candidate], count: int, picked: list, seen: list) -> None:
    for candidate in pool:
        if count <= 0:
            return
        text_words = words(candidate.text)
        if any(jaccard(text_words, other) >= NEAR_DUPLICATE for other in seen):
            continue
        picked.append(candidate)
        seen.append(text_words)
        count -= 1


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def to_rescore(
    candidates: Sequence[Candidate], adapter: str, bound: int, strategy: str,
    rng: random.Random | None = None,
) -> list[Candidate]:  # fmt: skip
    """The candidates to re-score under `adapter` this call, at most `bound`: three in four
    the most useful by their older scores (what the queue would hand out next), one in four
    at random, so that over calls every candidate gets a fresh score."""
    stale = [c for c in candidates if c.adapter != adapter]
    ranked = rank(stale, strategy)
    first = ranked[: bound - bound // 4]
    rest = ranked[len(first) :]
    rng = rng or random.Random()
    return first + rng.sample(rest, min(bound - len(first), len(rest)))


def rescored(candidate: Candidate, adapter: str, scores: dict) -> Candidate:
    """`candidate` with the scores `adapter` gives it (`scores_of`'s answer)."""
    return replace(candidate, adapter=adapter, **scores)
