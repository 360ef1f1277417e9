"""The `coverage` ranking (training/review.py): typical texts spread out in embedding
space first, away from texts handed out already, uncertainty only under a trained head."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from training import review
from training.split import text_key

LABELS = ["lost_card", "exchange_rate", "refund_request"]


def candidate(pid: str, probabilities=(0.4, 0.35, 0.25)) -> review.Candidate:
    text = "".join("abcdefghij"[int(c)] if c.isdigit() else c for c in pid)  # one word each
    return review.Candidate(
        pid, text, text_key(text), 0.0, "base", **review.scores_of(list(probabilities), LABELS, 3)
    )


def unit(rows) -> np.ndarray:
    x = np.asarray(rows, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def clusters(rng: np.random.Generator, per: int = 6):
    """Two tight clusters of `per` (around two axes) and one outlier (a third axis)."""
    a = [[1, 0, 0, 0] + rng.normal(0, 0.03, 4) for _ in range(per)]
    b = [[0, 1, 0, 0] + rng.normal(0, 0.03, 4) for _ in range(per)]
    return unit(a + b + [[0, 0, 0, 1]])


def test_both_clusters_come_before_the_outlier():
    vectors = clusters(np.random.default_rng(0))
    pool = [candidate(f"a{i}") for i in range(6)] + [candidate(f"b{i}") for i in range(6)]
    pool.append(candidate("outlier", (0.34, 0.33, 0.33)))  # the least certain of all
    order = [c.prediction_id[0] for c in review.coverage(pool, vectors)]
    assert sorted(order[:2]) == ["a", "b"]
    assert order.index("o") >= 2  # no neighbour: not typical, though the least certain
    picks = review.select(pool, 2, "coverage", vectors=vectors)
    assert sorted(c.prediction_id[0] for c in picks) == ["a", "b"]


def test_labeled_texts_push_the_picks_elsewhere():
    vectors = clusters(np.random.default_rng(1))
    pool = [candidate(f"a{i}") for i in range(6)] + [candidate(f"b{i}") for i in range(6)]
    labeled = vectors[:1]  # a text of cluster a was handed out already
    [first] = review.select(pool, 1, "coverage", vectors=vectors[:12], labeled=labeled)
    assert first.prediction_id.startswith("b")


def test_the_most_typical_member_stands_for_its_cluster():
    core = [[1, 0, 0], [1, 0.05, 0], [1, -0.05, 0], [1, 0, 0.05], [1, 0, -0.05]]
    edge = [[1, 0.4, 0.4]]  # in the cluster, but at its rim
    vectors = unit(core + edge)
    pool = [candidate(str(i)) for i in range(6)]
    assert review.coverage(pool, vectors)[0].prediction_id != "5"


def test_uncertainty_counts_only_when_asked():
    # Two members of one cluster, equally typical: the less certain wins under a trained head.
    vectors = unit([[1, 0.01, 0], [1, -0.01, 0], [1, 0, 0.01], [1, 0, -0.01]])
    sure, unsure = (0.9, 0.05, 0.05), (0.45, 0.44, 0.11)
    pool = [candidate("sure", sure), candidate("unsure", unsure)]
    pool += [candidate("c", sure), candidate("d", sure)]
    assert review.coverage(pool, vectors, uncertainty=True)[0].prediction_id == "unsure"
    near = review.coverage(pool, vectors, uncertainty=False)[0].prediction_id
    assert near in {"sure", "unsure", "c", "d"}


def test_every_candidate_is_ranked_once_even_duplicates():
    vectors = unit([[1, 0], [1, 0], [1, 0], [0, 1]])
    pool = [candidate(str(i)) for i in range(4)]
    order = review.coverage(pool, vectors)
    assert sorted(c.prediction_id for c in order) == ["0", "1", "2", "3"]
    assert review.coverage([], np.zeros((0, 2))) == []
    assert review.density(unit([[1, 0]])).tolist() == [1.0]


def test_an_embedding_strategy_needs_vectors():
    with pytest.raises(ValueError, match="pass vectors"):
        review.select([candidate("a")], 1, "coverage")
    # Without embeddings (to_rescore) it ranks by margin.
    pool = [candidate("sure", (0.9, 0.05, 0.05)), candidate("close", (0.4, 0.39, 0.21))]
    assert [c.prediction_id for c in review.rank(pool, "coverage")] == ["close", "sure"]


def test_a_random_share_still_applies():
    vectors = clusters(np.random.default_rng(2), per=10)
    pool = [candidate(str(i)) for i in range(len(vectors))]
    picks = review.select(pool, 4, "coverage", 0.5, random.Random(0), vectors=vectors)
    ranked = review.coverage(pool, vectors)
    assert picks[:2] == ranked[:2] and len({c.prediction_id for c in picks}) == 4


def test_to_embed_is_a_bounded_random_sample():
    pool = [candidate(str(i)) for i in range(50)]
    sample = review.to_embed(pool, 10, random.Random(0))
    assert len(sample) == 10 and len({c.prediction_id for c in sample}) == 10
    assert sample != pool[:10]
    assert len(review.to_embed(pool[:3], 10)) == 3


def test_recent_keeps_the_newest_and_re_embeds_after_a_swap():
    calls = []

    def embed(texts):
        calls.append(list(texts))
        return torch.ones(len(texts), 2)

    recent = review.Recent(3)
    assert recent.vectors("v1", embed) is None
    recent.add(["a", "b"], "v1", unit([[1, 0], [0, 1]]))
    recent.add(["c", "d"], "v1", unit([[1, 1], [1, -1]]))
    assert recent.vectors("v1", embed).shape == (3, 2) and calls == []  # "a" dropped
    assert np.allclose(recent.vectors("v2", embed), 1.0) and calls == [["b", "c", "d"]]
    recent.vectors("v2", embed)
    assert len(calls) == 1  # embedded under v2 once
