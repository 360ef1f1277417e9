"""The cheap phase of the active-learning benchmark: every ranking, offline.

Trains the head-only baseline (logistic regression on frozen embeddings of the base
model, benchmarks/bench_training.py) instead of the service's LoRA runs, so that all
the rankings fit in minutes: round 0 ranks by the zero-shot head (what the service
serves before any correction), each later round by the regression fitted on the labels
so far; each round labels one batch picked by `training.review.select`, the very code
GET /review ranks with, in calls of at most one REST reviewer's /review batch (a batch
larger than that, e.g. `--batch 100000`, refits only at the checkpoints: the REST run's
stale regime), and random order is the baseline. `coverage` ranks as the service does:
a random sample of candidates a call (as many as the service re-scores), spread out
from the last texts handed out, 1 - margin only once the regression has been fitted; its
embeddings are the base model's (the service's are those of the adapter in service).
The ranking that wins here is the one the REST phase (benchmarks/active.py) runs against
random.
"""

from __future__ import annotations

import os
import random

import numpy as np

from benchmarks.bench_training import LR_C
from benchmarks.harness.data import Split
from benchmarks.harness.report import say
from benchmarks.online_report import percent
from service.settings import ServiceSettings
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
    "coverage": ("coverage", 0.0),
    "coverage+20% random": ("coverage", 0.2),
}
SAMPLE = ServiceSettings.model_fields["review_rescore"].default  # candidates a call ranks


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


def simulate(name: str, data: tuple, train: Split, test: Split, names, points, batch, seed,
             call: int) -> dict:  # fmt: skip
    """Test accuracy of the regression at each checkpoint (labels so far) for one ranking:
    refitted after every `batch` labels, picked `call` labels at a time."""
    from sklearn.linear_model import LogisticRegression

    train_x, test_x, zero_shot = data
    rng = random.Random(seed)
    train_y, test_y = np.array(train.labels), np.array(test.labels)
    labeled: list[int] = []
    open_rows = list(range(len(train.texts)))
    probabilities, curve, fit = zero_shot, {}, None
    for point in points:
        while len(labeled) < point and open_rows:
            refit_at = min(len(labeled) + batch, point)
            while len(labeled) < refit_at and open_rows:
                count = min(call, refit_at - len(labeled))
                picks = pick(name, rng, open_rows, count, probabilities, train, train_x,
                             labeled, fit is not None)  # fmt: skip
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


def pick(name, rng, open_rows, count, probabilities, train, train_x, labeled, fitted):
    """One /review call's picks (train rows) under `name`'s ranking."""
    strategy, share = RANKINGS[name]
    if strategy is None:
        return [int(p) for p in rng.sample(open_rows, count)]
    names = sorted(set(train.labels))
    pool = candidates(train, probabilities, open_rows, names)
    if strategy not in review.EMBEDDED:
        return [int(c.prediction_id) for c in review.select(pool, count, strategy, share, rng)]
    pool = review.to_embed(pool, SAMPLE, rng)
    vectors = train_x[[int(c.prediction_id) for c in pool]]
    recent = train_x[labeled[-review.RECENT :]] if labeled else None
    picked = review.select(pool, count, strategy, share, rng, vectors=vectors, labeled=recent,
                           uncertainty=fitted)  # fmt: skip
    return [int(c.prediction_id) for c in picked]


def full_distribution(fit, x: np.ndarray, names: list[str]) -> np.ndarray:
    """The regression's probabilities over every label (0 for labels it has not seen)."""
    known = fit.predict_proba(x)
    full = np.zeros((len(x), len(names)))
    index = {name: i for i, name in enumerate(names)}
    full[:, [index[c] for c in fit.classes_]] = known
    return full


def compare(train: Split, test: Split, points, batch: int, base_model: str, template: str,
            seed: int, call: int, rankings=None) -> dict:  # fmt: skip
    """Every ranking's offline curve (or those of `rankings`): {name: {labels: accuracy}}."""
    names = sorted(set(train.labels))
    data = embed(train, test, names, base_model, template)
    return {
        name: simulate(name, data, train, test, names, points, batch, seed, call)
        for name in rankings or RANKINGS
    }
