"""Online-learning benchmark: the learning curve of the whole loop, through the REST API.

Starts the real `bentoml serve` (trainer included) on a fresh data directory with the
label set of the data, then streams the train set in a seeded random order as
predict -> correction by prediction_id, the trainer training on its own trigger. At
each checkpoint (so many corrections per class, or every K) the stream pauses until
the trainer has caught up (nothing pending, no run in progress, every worker on
CURRENT) or a timeout, then the whole test set goes through /predict: accuracy and
the adapter versions that answered. Baselines from the same run: zero-shot (the
checkpoint at 0), the head-only logistic regression of bench_training on frozen
embeddings of the same first N streamed samples (all of them, and only those the gate
did not hold out for validation), and that head on all the train data.
Also: each run's trigger -> promotion -> served time, and the swaps.

Works on any CSV/TSV with a text and a label column. Banking77: Casanueva et al. 2020,
CC-BY-4.0, read in place from --data.

Usage, from the repository root:
    .venv/bin/python -m benchmarks.online --data ../shared/data/banking77 [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

from benchmarks.bench_training import lr_accuracy
from benchmarks.harness.data import (
    Split,
    add_data_arguments,
    check_known,
    read_split,
    split_file,
)
from benchmarks.harness.report import RESULTS, say, write_json
from benchmarks.harness.server import running_server
from benchmarks.online_report import markdown, percent, plot
from benchmarks.online_service import (
    BATCH,
    Service,
    evaluate,
    remembered,
    stream,
    training_runs,
    wait_caught_up,
)
from training.settings import CoreSettings
from training.split import holdout_percent, split_for, text_key

PER_CLASS = (10, 20, 40)  # the few-shot points, and one more
QUICK = {"labels": 12, "per_class": (10, 20), "test_per_class": 10}
# The benchmark's trigger settings (the operator's choice; --set overrides any of them).
# A short interval lets a remainder below the sample threshold train at a checkpoint.
# Niceness 0: on a shared machine a niced trainer's times measure the neighbours' load.
SERVICE_SETTINGS = {
    "LIVETUNE_TRAIN_MIN_NEW_SAMPLES": "50",
    "LIVETUNE_TRAIN_MAX_INTERVAL_S": "10",
    "LIVETUNE_TRAIN_POLL_S": "1",
    "LIVETUNE_TRAIN_NICE": "0",
    "LIVETUNE_ACCESS_LOG": "false",
}
# Served, never (yet) corrected: most of a real service's traffic gets no correction.
UNCORRECTED = 3_000
VALIDATION = CoreSettings.model_fields["validation_percent"].default  # the service's default


def load_data(args) -> tuple[Split, Split]:
    """(train, test) from --train/--test, or train.* and test.* in --data."""
    files = [
        given or split_file(args.data, name)
        for name, given in (("train", args.train), ("test", args.test))
    ]
    train, test = (read_split(f, args.text_column, args.label_column) for f in files)
    check_known(test, train.labels, "the train data")
    return train, test


def quick_subset(train: Split, test: Split, seed: int) -> tuple[Split, Split]:
    """A few labels, the stream up to the last checkpoint, a few test texts a label."""
    labels = set(random.Random(seed).sample(sorted(set(train.labels)), QUICK["labels"]))
    train = train.take([i for i, y in enumerate(train.labels) if y in labels])
    seen: dict[str, int] = {}
    keep = []
    for i, label in enumerate(test.labels):
        if label in labels and seen.get(label, 0) < QUICK["test_per_class"]:
            seen[label] = seen.get(label, 0) + 1
            keep.append(i)
    return train, test.take(keep)


def checkpoints(n_labels: int, total: int, per_class, every: int | None) -> list[int]:
    """Stream positions to measure at: 0, then per-class multiples (or every K), and the end."""
    points = range(every, total, every) if every else (k * n_labels for k in per_class)
    return sorted({0, total, *(p for p in points if p < total)})


def run_stream(
    service: Service, train: Split, test: Split, points, timeout, evaluator: Service | None = None
) -> list[dict]:
    """Stream up to each checkpoint, wait for the trainer, evaluate (through `evaluator`,
    the replica that does not remember what it serves): the learning curve."""
    evaluator = evaluator or service
    curve, done, t0 = [], 0, time.monotonic()
    for point in points:
        segment = stream(service, train.take(range(done, point)))
        done = point
        wait = wait_caught_up(service, timeout)
        measured = evaluate(evaluator, test)
        curve.append(
            {
                "samples": point,
                "per_class": round(point / len(set(train.labels)), 1),
                **measured,
                **wait,
                "stream": segment,
                "at_s": round(time.monotonic() - t0, 1),
            }
        )
        say(
            f"{point} corrections: accuracy {measured['accuracy']:.1%} by "
            f"{measured['adapters']}, waited {wait['waited_s']} s (caught up: {wait['caught_up']})"
        )
    return curve


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


def service_env(args, labels_file: Path) -> dict[str, str]:
    """The benchmark's trigger settings, then --set, then the data's labels."""
    env = dict(SERVICE_SETTINGS)
    for item in args.set:
        key, _, value = item.partition("=")
        env[key if key.startswith("LIVETUNE_") else f"LIVETUNE_{key.upper()}"] = value
    if args.base_model:
        env["LIVETUNE_BASE_MODEL"] = args.base_model
    env["LIVETUNE_LABELS_FILE"] = str(labels_file)
    return env


def evaluation_replica(tmp: Path, server, env: dict[str, str]):
    """A second server on the same data directory, trainer off and predictions not
    remembered, that answers the test set: the test texts never join the prediction log,
    so neither the review queue nor self-training ever sees them (a replica follows
    CURRENT and the label set as any worker does)."""
    return running_server(
        tmp / "replica",
        ready_timeout=300,
        **{
            **env,
            "LIVETUNE_DATA_DIR": str(server.data_dir),
            "LIVETUNE_TRAINER": "false",
            "LIVETUNE_LOG_PREDICTIONS": "false",
        },
    )


def serve_uncorrected(service: Service, texts: list[str]) -> None:
    """/predict only: traffic nobody has corrected yet."""
    for start in range(0, len(texts), BATCH):
        service.predict(texts[start : start + BATCH])
    if texts:
        say(f"served {len(texts)} texts nobody corrected yet")


def serve_and_stream(
    args, train: Split, test: Split, points: list[int], uncorrected: list[str] = ()
) -> dict:
    """The real service on a fresh data directory; the stream, checkpoints and run records."""
    with tempfile.TemporaryDirectory(prefix="livetune-online-") as tmp:
        labels_file = Path(tmp) / "labels.json"
        labels_file.write_text(json.dumps(sorted(set(train.labels))))
        env = service_env(args, labels_file)
        say(f"service settings: {env}")
        with (
            running_server(Path(tmp), ready_timeout=300, **env) as server,
            evaluation_replica(Path(tmp), server, env) as replica,
        ):
            service, evaluator = Service(server.base), Service(replica.base)
            try:
                serve_uncorrected(service, uncorrected)
                curve = run_stream(service, train, test, points, args.catch_up_timeout, evaluator)
                workers = service.status()["workers"]
            finally:
                service.close()
                evaluator.close()
        runs = training_runs(server.data_dir, service.served_since)
        # The replica answered the test set: none of it may be in the log self-training
        # reads (a test text that is also a train text was served as one: Banking77 has 7).
        streamed = {text_key(text) for text in [*train.texts, *uncorrected]}
        test_only = [text for text in test.texts if text_key(text) not in streamed]
        log = {"test": remembered(server.data_dir, test_only),
               "uncorrected": remembered(server.data_dir, list(uncorrected))}  # fmt: skip
    first = next((r for r in runs if r["state"] == "promoted"), None)
    swaps = {
        "promotions": sum(r["state"] == "promoted" for r in runs),
        # corrections the first promoted adapter's run had (train + held out)
        "first_promotion_at": first and first["train_samples"] + first["validation_samples"],
        "versions_served": len(set(service.served_since) - {"base"}),
        "worker_swaps": sum(w["swaps"] for w in workers),
        "failed_swaps": sum(w["failed_swaps"] for w in workers),
    }
    settings = {k: v for k, v in env.items() if k != "LIVETUNE_LABELS_FILE"}
    return {
        "curve": curve,
        "runs": runs,
        "swaps": swaps,
        "service_settings": settings,
        "prediction_log": log,
    }


def parse_args(argv):
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_arguments(parser)
    parser.add_argument("--base-model", default="", help="LIVETUNE_BASE_MODEL (default embedded)")
    parser.add_argument(
        "--per-class",
        default=",".join(map(str, PER_CLASS)),
        help="checkpoints in corrections per label (x the number of labels)",
    )
    parser.add_argument("--every", type=int, help="a checkpoint every K corrections instead")
    parser.add_argument(
        "--catch-up-timeout",
        type=float,
        default=1200.0,
        help="seconds a checkpoint waits for the trainer to catch up",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a LIVETUNE_* setting for the service, e.g. VALIDATION_PERCENT=10",
    )
    parser.add_argument(
        "--uncorrected",
        type=int,
        default=UNCORRECTED,
        help=(
            "texts from the end of the stream's order served before it starts: traffic"
            " nobody has corrected yet (corrected when the stream gets there), at most half"
            " the train set; self-training learns from it. 0 = none"
        ),
    )
    parser.add_argument("--seed", type=int, default=0, help="stream order (and --quick's labels)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK['labels']} labels, {max(QUICK['per_class'])} a label streamed",
    )
    parser.add_argument(
        "--out", type=Path, help="JSON (default benchmarks/results/online-<data>.json)"
    )
    parser.add_argument("--plot", type=Path, help="PNG (default: --out with .png)")
    return parser.parse_args(argv)


def prepare(args) -> tuple[str, Split, Split, list[int]]:
    """The data's name, the train stream in its seeded order, the test set, the checkpoints."""
    train, test = load_data(args)
    per_class = [int(k) for k in args.per_class.split(",") if k]
    if args.quick:
        train, test = quick_subset(train, test, args.seed)
        per_class = list(QUICK["per_class"])
    train = train.shuffled(args.seed)
    n_labels = len(set(train.labels))
    total = min(len(train.texts), max(per_class) * n_labels) if args.quick else len(train.texts)
    return (
        (args.train.stem if args.train else args.data.resolve().name),
        train,
        test,
        checkpoints(n_labels, total, per_class, args.every),
    )


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


def main(argv=None) -> dict:
    """Stream the train set through the service, then the baselines, the plot and the table."""
    args = parse_args(argv)
    started = time.monotonic()
    name, train, test, points = prepare(args)
    n_labels, total = len(set(train.labels)), points[-1]
    say(
        f"{name}: {n_labels} labels, streaming {total} of {len(train.texts)} train samples, "
        f"{len(test.texts)} test; checkpoints {points}"
    )
    results = {
        "dataset": name,
        "quick": args.quick,
        "seed": args.seed,
        "n_labels": n_labels,
        "train_samples": len(train.texts),
        "stream_samples": total,
        "test_samples": len(test.texts),
        "base_model": args.base_model or "embedded",
    }
    uncorrected = train.texts[len(train.texts) - min(args.uncorrected, len(train.texts) // 2) :]
    results["uncorrected_served"] = len(uncorrected)
    results.update(serve_and_stream(args, train.take(range(total)), test, points, uncorrected))
    results["baselines"] = baselines(args, results, train, test, points)
    results["wall_s"] = round(time.monotonic() - started, 1)
    out = args.out or RESULTS / f"online-{name}.json"
    write_json(out, results)
    plot(results, args.plot or out.with_suffix(".png"))
    print(markdown(results))
    return results


if __name__ == "__main__":
    main()
