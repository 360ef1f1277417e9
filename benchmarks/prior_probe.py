"""Offline probe of the small-data recipes (issue 33): on the first N corrections of the
online benchmark's stream (same seeded order, same variants), the test accuracy of
zero-shot, of the head-only logistic regression (the online benchmark's baseline), and
of the head kept close to its start (training.head_prior); and what the gate would see:
that head's 5-fold out-of-fold answers against zero-shot's on the same corrections, and
the lower bound the gate compares with its margin. Frozen embeddings only, so a data set
takes a minute, not hours:

    .venv/bin/python -m benchmarks.prior_probe --data ../shared/data/sentiment \
        --per-class 2,5,10,20,40 --seeds 0,1,2 [--labels opaque] [--reverse]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

import numpy as np
import torch

from benchmarks.bench_training import lr_accuracy
from benchmarks.online_data import add_variant_arguments, prepare
from training import head_prior
from training.evidence import fold_of
from training.labels import Label
from training.predictor import zero_shot_predictor
from training.settings import CoreSettings
from training.split import text_key
from training.trainer import class_weights
from training.validation import lower_bound

TEMPLATE = CoreSettings.model_fields["label_template"].default


def probe_point(zero, embeddings, targets, keys, test_x, test_y, scale, confidence):
    """One checkpoint: test accuracies and the gate's out-of-fold view of the prior head."""
    weights = class_weights(targets.tolist(), zero.weight.shape[0])
    head, strength = head_prior.fit_chosen(zero, embeddings, targets, weights, scale)
    folds = [fold_of(key, 5) for key in keys]
    wins = losses = 0
    for fold in range(5):
        held = torch.tensor([f == fold for f in folds])
        if not held.any() or held.all():
            continue
        fold_head, _ = head_prior.fit_chosen(
            zero, embeddings[~held], targets[~held], weights, scale
        )
        mine = fold_head.logits(embeddings[held]).argmax(-1) == targets[held]
        theirs = zero.logits(embeddings[held]).argmax(-1) == targets[held]
        wins += int((mine & ~theirs).sum())
        losses += int((~mine & theirs).sum())
    test = lambda h: float((h.logits(test_x).argmax(-1) == test_y).float().mean())  # noqa: E731
    return {
        "prior_head": test(head),
        "strength": strength,
        "oof_wins": wins,
        "oof_losses": losses,
        "bound": lower_bound(losses, wins, len(targets), confidence),
    }


def run(args, seed: int) -> dict:
    args.seed = seed
    name, train, test, _ = prepare(args)
    names = sorted(set(train.labels))
    index = {n: i for i, n in enumerate(names)}
    predictor = zero_shot_predictor(None, [Label(n) for n in names], template=TEMPLATE)
    model = predictor.model
    zero = head_prior.Head(model.head.weight.detach().clone(), model.head.bias.detach().clone())
    sizes = [int(k) * len(names) for k in args.per_class.split(",")]
    stream = max(sizes)
    train_x = predictor.embeddings(train.texts[:stream])
    test_x = predictor.embeddings(test.texts)
    train_y = torch.tensor([index[y] for y in train.labels[:stream]])
    test_y = torch.tensor([index[y] for y in test.labels])
    keys = [text_key(t) for t in train.texts[:stream]]
    zero_shot = float((zero.logits(test_x).argmax(-1) == test_y).float().mean())
    points = {}
    for n in sizes:
        rows = list(range(n))
        point = probe_point(
            zero, train_x[:n], train_y[:n], keys[:n], test_x, test_y, model.head.scale,
            args.confidence,
        )  # fmt: skip
        lr = (
            lr_accuracy(train_x.numpy(), np.array(train.labels[:stream]), test_x.numpy(),
                        np.array(test.labels), rows)
            if len(set(train.labels[:n])) > 1 else None
        )  # fmt: skip
        point["head_only_lr"] = lr
        promote = point["bound"] >= -args.margin
        point["served"] = point["prior_head"] if promote else zero_shot
        points[n] = point
        print(
            f"{name} seed {seed} n={n}: zero-shot {zero_shot:.3f} LR {lr}"
            f" prior head {point['prior_head']:.3f} (strength {point['strength']})"
            f" oof +{point['oof_wins']}/-{point['oof_losses']} bound {point['bound']:+.3f}"
            f" -> served {point['served']:.3f}",
            flush=True,
        )
    return {"name": name, "seed": seed, "zero_shot": zero_shot, "points": points}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--train", type=Path)
    parser.add_argument("--test", type=Path)
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--label-column", default="category")
    parser.add_argument("--per-class", default="2,5,10,20")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument("--margin", type=float, default=0.02)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    add_variant_arguments(parser)
    args = parser.parse_args()
    args.quick, args.every, args.stream_per_class = False, None, None
    torch.set_num_threads(args.threads)
    runs = []
    for seed in (int(s) for s in args.seeds.split(",")):
        runs.append(run(args, seed))
    for n in runs[0]["points"]:
        for key in ("served", "head_only_lr", "prior_head"):
            values = [r["points"][n][key] for r in runs if r["points"][n][key] is not None]
            spread = statistics.pstdev(values) if len(values) > 1 else 0.0
            print(f"n={n} {key}: mean {statistics.mean(values):.3f} +- {spread:.3f}")
    if args.out:
        args.out.write_text(json.dumps(runs, indent=1))


if __name__ == "__main__":
    main()
