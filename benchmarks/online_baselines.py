"""The online benchmark's baselines, from the same run: zero-shot (the checkpoint at 0),
and the head-only logistic regression of bench_training on frozen embeddings of the same
first N streamed samples (all of them, and only those the gate did not hold out), and
that head on all the train data."""

from __future__ import annotations

import os

from benchmarks.bench_training import lr_accuracy
from benchmarks.harness.data import Split
from benchmarks.harness.report import say
from benchmarks.online_report import percent
from training.settings import CoreSettings
from training.split import holdout_percent, split_for, text_key

VALIDATION = CoreSettings.model_fields["validation_percent"].default  # the service's default


def head_only(train: Split, test: Split, sizes: list[int], base_model: str, trained) -> dict:
    """bench_training's baseline (logistic regression, C=10, on frozen embeddings of the same
    base model) on the first N streamed samples, and on those of them the trainer trains on
    (`trained(n)`: not held out by a run at data cursor n), for each N."""
    import numpy as np
    import torch

    from training.labels import Label
    from training.model import TextClassifier, load_encoder
    from training.predictor import Predictor

    torch.set_num_threads(os.cpu_count() or 1)
    encoder, tokenizer = load_encoder(base_model or None)
    names = sorted(set(train.labels))
    predictor = Predictor(TextClassifier(encoder, len(names)), tokenizer, [Label(n) for n in names])
    train_x, test_x = (
        predictor.embeddings(train.texts).numpy(),
        predictor.embeddings(test.texts).numpy(),
    )
    train_y, test_y = np.array(train.labels), np.array(test.labels)

    def score(rows: list[int]) -> float | None:
        """Test accuracy of the regression fitted on `rows`; None with a single class."""
        if len(set(train_y[rows])) < 2:
            return None  # a classifier needs two classes
        return lr_accuracy(train_x, train_y, test_x, test_y, rows)

    scores: dict[str, dict[int, float | None]] = {"all": {}, "train_split": {}}
    for n in sorted(set(sizes)):
        scores["all"][n] = score(list(range(n)))
        kept = trained(n)
        scores["train_split"][n] = score([i for i in range(n) if kept[i]])
        say(
            f"head-only logistic regression, first {n}: {percent(scores['all'][n])}, "
            f"their train split: {percent(scores['train_split'][n])}"
        )
    return scores


def baselines(args, results: dict, train: Split, test: Split, points: list[int]) -> dict:
    """Zero-shot, and the head-only regression on the streamed samples, on their train
    split (as the service's validation share leaves it), and on all the train data."""
    total = results["stream_samples"]
    floor = float(results["service_settings"].get("LIVETUNE_VALIDATION_PERCENT", VALIDATION))
    keys = [text_key(text) for text in train.texts]

    def trained(n: int) -> list[bool]:
        """Which of the first n streamed samples a run at cursor n trains on (the store's
        split at the floor, and the early holdout on top: training.split.holdout_percent)."""
        percent = holdout_percent(n, floor)
        return [split_for(key, percent) == "train" for key in keys[:n]]

    sizes = [p for p in points if p] + [len(train.texts)]
    scores = head_only(train, test, sizes, args.base_model, trained)
    return {
        "zero_shot": results["curve"][0]["accuracy"],
        "head_only": {str(n): a for n, a in scores["all"].items() if n <= total},
        "head_only_train_split": {
            str(n): a for n, a in scores["train_split"].items() if n <= total
        },
        "head_only_full": scores["all"][len(train.texts)],
    }
