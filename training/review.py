"""Which served predictions a reviewer should label first.

Uncertainty under the adapter in service (the margin between the two most probable labels,
or the entropy), near-duplicate texts collapsed, predicted labels kept diverse and a share
picked at random; or coverage of the embedding space (typical texts, spread out), which
does not trust a head that has not learned yet. Plain functions over scored candidates:
the service ranks with them and `benchmarks/active.py` compares the strategies with the
very same code.
"""

from __future__ import annotations

import math
import random
import re
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from training.split import normalise

# margin: smallest p1 - p2 first; entropy: highest entropy first; diverse: margin order,
# taken in turns across the predicted labels so one confusable label cannot fill a batch;
# coverage: typical and spread out in embedding space (cold-start active learning, as
# TypiClust or k-center greedy), times 1 - margin once the head has learned from labels.
STRATEGIES = ("margin", "entropy", "diverse", "coverage")
EMBEDDED = frozenset({"coverage"})  # they rank by embeddings: `select(vectors=...)`
NEIGHBOURS = 5  # density: mean cosine similarity to this many nearest other candidates
RECENT = 256  # texts handed out lately that a coverage ranking keeps its picks away from
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
    """Most useful first, by `strategy` (one of STRATEGIES; an EMBEDDED one by its scores
    alone, in margin order, as `to_rescore` needs)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; one of {', '.join(STRATEGIES)}")
    ranked = sorted(candidates, key=lambda c: usefulness(c, strategy), reverse=True)
    return by_turns(ranked) if strategy == "diverse" else ranked


def coverage(
    candidates: Sequence[Candidate], vectors, labeled=None, uncertainty: bool = False
) -> list[Candidate]:
    """All of `candidates`, typical and spread out first: each next one has the largest
    density x cosine distance to the nearest one ranked before it or in `labeled`.

    Args:
        vectors: (len(candidates), hidden) unit-length embeddings, row i of candidate i.
        labeled: (m, hidden) embeddings of texts already labeled or handed out, or None.
        uncertainty: weight by 1 - margin too; only for a head trained on labels (the
            zero-shot head's least certain texts are outliers, not class boundaries).

    Quadratic in len(candidates): callers rank a bounded sample (a few hundred)."""
    if not candidates:
        return []
    x = np.asarray(vectors, dtype=np.float32)  # (n, hidden)
    weight = np.clip(density(x), 1e-6, None)
    if uncertainty:
        weight *= 1.0 - np.array([c.margin for c in candidates], dtype=np.float32)
    nearest = np.full(len(x), 2.0, dtype=np.float32)  # cosine distance, at most 2
    if labeled is not None and len(labeled):
        nearest = np.minimum(nearest, (1.0 - x @ np.asarray(labeled, np.float32).T).min(1))
    order: list[int] = []
    for _ in range(len(x)):
        score = weight * np.maximum(nearest, 0.0)
        score[order] = -np.inf
        best = int(np.argmax(score))
        order.append(best)
        nearest = np.minimum(nearest, 1.0 - x @ x[best])
    return [candidates[i] for i in order]


def density(x: np.ndarray) -> np.ndarray:
    """Each row's mean cosine similarity to its NEIGHBOURS nearest other rows: (n,)."""
    if len(x) < 2:
        return np.ones(len(x), dtype=np.float32)
    similarity = x @ x.T
    np.fill_diagonal(similarity, -np.inf)
    k = min(NEIGHBOURS, len(x) - 1)
    return -np.partition(-similarity, k - 1, axis=1)[:, :k].mean(1)


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
    *,
    vectors=None,
    labeled=None,
    uncertainty: bool = False,
) -> list[Candidate]:
    """Up to `count` candidates, most useful first, no two near-duplicates; a
    `random_share` of them drawn uniformly from the rest (after the ranked ones). An
    EMBEDDED strategy needs `vectors` (and takes `labeled`, `uncertainty`: `coverage`).

    The near-duplicate check compares each pick with those already picked (a few hundred
    at most), so plain Jaccard over word sets is enough; MinHash indexes pay off only for
    corpora far larger than one batch."""
    rng = rng or random.Random()
    if strategy in EMBEDDED:
        if vectors is None:
            raise ValueError(f"strategy {strategy!r} ranks by embeddings: pass vectors")
        ranked = coverage(candidates, vectors, labeled, uncertainty)
    else:
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


def to_embed(
    candidates: Sequence[Candidate], bound: int, rng: random.Random | None = None
) -> list[Candidate]:
    """The candidates an EMBEDDED strategy scores, embeds and ranks this call: at most
    `bound`, uniformly at random, so that their density stands for the whole pool's."""
    rng = rng or random.Random()
    return rng.sample(list(candidates), min(bound, len(candidates)))


def rescored(candidate: Candidate, adapter: str, scores: dict) -> Candidate:
    """`candidate` with the scores `adapter` gives it (`scores_of`'s answer)."""
    return replace(candidate, adapter=adapter, **scores)


class Recent:
    """The texts a queue handed out lately (at most `size`) and their embeddings, each under
    the adapter that embedded it: what a `coverage` ranking keeps its picks away from."""

    def __init__(self, size: int):
        self.items: deque = deque(maxlen=size)  # (text, adapter, embedding)
        self.lock = threading.Lock()

    def add(self, texts, adapter: str, vectors) -> None:
        with self.lock:
            self.items.extend(zip(texts, [adapter] * len(texts), vectors))

    def vectors(self, adapter: str, embed) -> np.ndarray | None:
        """(n, hidden) embeddings under `adapter`, None if there is none: `embed` (texts ->
        tensor) re-embeds those of another adapter, so at most `size` texts after a swap."""
        with self.lock:
            stale = [i for i, (_, by, _) in enumerate(self.items) if by != adapter]
            if stale:
                fresh = embed([self.items[i][0] for i in stale]).numpy()
                for i, vector in zip(stale, fresh):
                    self.items[i] = (self.items[i][0], adapter, vector)
            return np.stack([vector for *_, vector in self.items]) if self.items else None
