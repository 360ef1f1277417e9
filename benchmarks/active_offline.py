"""The cheap phase of the active-learning benchmark: every ranking, offline.

Trains the head-only baseline (logistic regression on frozen embeddings of the base
model, benchmarks/bench_training.py) instead of the service's LoRA runs, so that all
the rankings fit in minutes: round 0 ranks by the zero-shot head (what the service
serves before any correction), each later round by the regression fitted on the labels
so far; each round labels one batch picked by `training.review.select`, the very code
GET /review ranks with, and random order is the baseline. The ranking that wins here
is the one the REST phase (benchmarks/active.py) runs against random.
"""

from __future__ import annotations

import os
import random

import numpy as np

from benchmarks.bench_training import LR_C
from benchmarks.harness.data import Split
from benchmarks.harness.report import say
from benchmarks.online_report import percent
from training import review
from training.split import text_key

# name -> (strategy, random share); "random" is the stream order online.py uses.
RANKINGS = {
    "random": (None, 1.0),
    "margin": ("margin", 0.0),
    "entropy": ("entropy", 0.0),
    "diverse": ("diverse", 0.0),
    "margin+20% random": ("margin", 0.2),
    "diverse+20% random": ("diverse", 0.2),
    "margin+50% random": ("margin", 0.5),
    "diverse+50% random": ("diverse", 0.5),
}


def embed(train: Split, test: Split, names: list[str], base_model: str, template: str):
    """(train embeddings, test embeddings, zero-shot probabilities of the train texts)."""
    import torch

    from training.labels import Label
    from training.predictor import zero_shot_predictor

    torch.set_num_threads(os.cpu_count() or 1)
    predictor = zero_shot_predictor(
        base_model or None, [Label(n) for n in names], template=template
    )
    train_x = predictor.embeddings(train.texts)
    head = predictor.model.head
    with torch.inference_mode():
        zero_shot = (train_x @ head.weight.T.float() + head.bias.float()).softmax(-1).numpy()
    return train_x.numpy(), predictor.embeddings(test.texts).numpy(), zero_shot


def candidates(train: Split, probabilities: np.ndarray, open_rows: list[int], names, top_k=5):
    """The open rows as the queue sees them, scored by `probabilities`."""
    return [
        review.Candidate(
            prediction_id=str(i),
            text=train.texts[i],
            text_key=text_key(train.texts[i]),
            served_at=0.0,
            adapter="offline",
            **review.scores_of(probabilities[i].tolist(), names, top_k),
        )
        for i in open_rows
    ]


def simulate(name: str, data: tuple, train: Split, test: Split, names, points, batch, seed):
    """Test accuracy of the regression at each checkpoint (labels so far) for one ranking."""
    from sklearn.linear_model import LogisticRegression

    train_x, test_x, zero_shot = data
    strategy, share = RANKINGS[name]
    rng = random.Random(seed)
    train_y, test_y = np.array(train.labels), np.array(test.labels)
    labeled: list[int] = []
    open_rows = list(range(len(train.texts)))
    probabilities, curve, fit = zero_shot, {}, None
    for point in points:
        while len(labeled) < point and open_rows:
            count = min(batch, point - len(labeled))
            if strategy is None:
                picks = [int(p) for p in rng.sample(open_rows, count)]
            else:
                pool = candidates(train, probabilities, open_rows, names)
                picked = review.select(pool, count, strategy, share, rng)
                picks = [int(c.prediction_id) for c in picked]
            labeled += picks
            chosen = set(picks)
            open_rows = [i for i in open_rows if i not in chosen]
            if len(set(train_y[labeled])) > 1:  # else the zero-shot head keeps ranking
                fit = LogisticRegression(C=LR_C, max_iter=2000)
                fit.fit(train_x[labeled], train_y[labeled])
                probabilities = full_distribution(fit, train_x, names)
        curve[point] = None if fit is None else float((fit.predict(test_x) == test_y).mean())
        covered = len(set(train_y[labeled]))
        say(f"offline {name}: {point} labels ({covered} labels covered): {percent(curve[point])}")
    return curve


def full_distribution(fit, x: np.ndarray, names: list[str]) -> np.ndarray:
    """The regression's probabilities over every label (0 for labels it has not seen)."""
    known = fit.predict_proba(x)
    full = np.zeros((len(x), len(names)))
    index = {name: i for i, name in enumerate(names)}
    full[:, [index[c] for c in fit.classes_]] = known
    return full


def compare(train: Split, test: Split, points, batch: int, base_model: str, template: str,
            seed: int) -> dict:  # fmt: skip
    """Every ranking's offline curve: {name: {labels: accuracy}}."""
    names = sorted(set(train.labels))
    data = embed(train, test, names, base_model, template)
    return {
        name: simulate(name, data, train, test, names, points, batch, seed) for name in RANKINGS
    }
