"""The review queue's ranking (training/review.py): uncertainty first, near-duplicates
collapsed, predicted labels taken in turns, a share at random, bounded re-scoring."""

from __future__ import annotations

import math
import random

import pytest

from training import review
from training.split import text_key

LABELS = ["lost_card", "exchange_rate", "refund_request"]


def candidate(pid: str, text: str, probabilities, adapter: str = "base") -> review.Candidate:
    return review.Candidate(
        pid, text, text_key(text), 0.0, adapter, **review.scores_of(probabilities, LABELS, 3)
    )


def test_scores_of_a_distribution():
    scores = review.scores_of([0.2, 0.5, 0.3], LABELS, 2)
    assert scores["top"] == (("exchange_rate", 0.5), ("refund_request", 0.3))
    assert scores["margin"] == pytest.approx(0.2)
    expected = -sum(p * math.log(p) for p in (0.2, 0.5, 0.3)) / math.log(3)
    assert scores["entropy"] == pytest.approx(expected)
    assert review.scores_of([1 / 3] * 3, LABELS, 3)["entropy"] == pytest.approx(1.0)


def test_estimate_from_a_served_top_k_spreads_the_rest_evenly():
    margin, entropy = review.estimate_from_top([("a", 0.5), ("b", 0.3)], label_count=4)
    assert margin == pytest.approx(0.2)
    spread = [0.5, 0.3, 0.1, 0.1]
    assert entropy == pytest.approx(-sum(p * math.log(p) for p in spread) / math.log(4))


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        ("margin", ["tie", "close", "flat", "mild", "sure"]),
        # "tie" is the closest call, but spread over two labels only: entropy ranks it low.
        ("entropy", ["flat", "close", "mild", "tie", "sure"]),
    ],
)
def test_rank_puts_the_least_certain_first(strategy, expected):
    pool = [
        candidate("sure", "my card", [0.96, 0.02, 0.02]),
        candidate("mild", "the rate", [0.2, 0.7, 0.1]),
        candidate("close", "a refund", [0.1, 0.42, 0.48]),
        candidate("tie", "hello", [0.5, 0.5, 0.0]),
        candidate("flat", "world", [0.4, 0.3, 0.3]),
    ]
    assert [c.prediction_id for c in review.rank(pool, strategy)] == expected


def test_margin_order_is_by_the_gap_between_the_two_best():
    pool = [candidate(str(i), f"text {i}", [0.5 + d, 0.5 - d, 0.0]) for i, d in
            enumerate([0.3, 0.01, 0.2, 0.05])]  # fmt: skip
    assert [c.prediction_id for c in review.rank(pool, "margin")] == ["1", "3", "2", "0"]


def test_diverse_takes_the_predicted_labels_in_turns():
    pool = [
        candidate("a1", "card one", [0.51, 0.49, 0.0]),
        candidate("a2", "card two", [0.52, 0.48, 0.0]),
        candidate("a3", "card three", [0.53, 0.47, 0.0]),
        candidate("b1", "rate one", [0.3, 0.6, 0.1]),
        candidate("c1", "refund one", [0.1, 0.1, 0.8]),
    ]
    assert [c.prediction_id for c in review.rank(pool, "diverse")] == ["a1", "b1", "c1", "a2", "a3"]
    assert [c.prediction_id for c in review.rank(pool, "margin")][:3] == ["a1", "a2", "a3"]


def test_select_collapses_near_duplicates():
    pool = [
        candidate("1", "I lost my card 1234 yesterday", [0.5, 0.5, 0.0]),
        candidate("2", "i lost my card 9876 YESTERDAY!", [0.5, 0.49, 0.01]),
        candidate("3", "what is the exchange rate", [0.4, 0.41, 0.19]),
    ]
    picked = review.select(pool, 3, "margin")
    assert [c.prediction_id for c in picked] == ["1", "3"]


def test_select_draws_the_random_share_from_the_rest():
    pool = [candidate(str(i), f"text number {'x' * i}", [0.5 + i / 100, 0.5 - i / 100, 0.0])
            for i in range(40)]  # fmt: skip
    picked = review.select(pool, 10, "margin", random_share=0.3, rng=random.Random(1))
    ids = [c.prediction_id for c in picked]
    assert ids[:7] == [str(i) for i in range(7)]  # the seven most uncertain first
    assert len(set(ids)) == 10 and all(int(i) >= 7 for i in ids[7:])
    assert review.select(pool, 5, "margin", random_share=1.0, rng=random.Random(2)) != ids[:5]


def test_to_rescore_is_bounded_and_skips_what_the_adapter_already_scored():
    fresh = [candidate(f"f{i}", f"fresh {i}", [0.5, 0.5, 0.0], adapter="v2") for i in range(5)]
    stale = [candidate(f"s{i}", f"stale {'y' * i}", [0.5 + i / 100, 0.5 - i / 100, 0.0])
             for i in range(20)]  # fmt: skip
    chosen = review.to_rescore(fresh + stale, "v2", 8, "margin", random.Random(0))
    ids = [c.prediction_id for c in chosen]
    assert len(ids) == 8 and not any(i.startswith("f") for i in ids)
    assert ids[:6] == [f"s{i}" for i in range(6)]  # the queue's next items first
    assert review.to_rescore(fresh, "v2", 8, "margin") == []


def test_an_unknown_strategy_is_refused():
    with pytest.raises(ValueError, match="margin"):
        review.rank([], "loudest")
