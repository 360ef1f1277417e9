"""Encoder benchmark: accuracy and serving speed of base models side by side, in one run.

For each base model (default: the embedded all-MiniLM-L6-v2, and all-mpnet-base-v2 from
`make mpnet` where it is installed):

1. Accuracy on the test set: zero-shot (the head started from the data's label names,
   as the service starts), and bench_training's head-only baseline, logistic regression
   (C=10) on the model's frozen embeddings, at 10 and 20 examples per label (mean of the
   same seeded draws for every model) and on all the train data.
2. Serving speed in-process, with the predictor built as the service builds it (its
   default settings): `Predictor.predict` on the test texts in requests of 16 (texts/s,
   median of slices), and the p50 latency of one-text requests, at torch threads = the
   cores (the service's default) and at 1. The models take turns, slice by slice, so a
   burst of load hits them alike; on a 2-core box with a busy neighbour, 2 threads stall
   at every parallel op (5-10x slower than 1), so the 1-thread row is the steady one.

Read the ratios to the first model: a shared machine drifts run to run, and the speed
phase records the CPU share other processes took meanwhile.

Usage, from the repository root:
    .venv/bin/python -m benchmarks.bench_encoders --data ../shared/data/banking77 \
        [--model PATH ...] [--quick]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.bench_training import SEED, lr_accuracy, per_class, spread
from benchmarks.harness.data import DEFAULT_DATA, Split, TextPool, load_split, read_labels
from benchmarks.harness.report import RESULTS, say, table, write_json
from benchmarks.harness.server import ROOT
from benchmarks.harness.stats import CpuMeter, interleaved_medians, percentile, rate_for, rounded
from service.settings import ServiceSettings, worker_threads
from training.labels import Label
from training.predictor import Predictor, zero_shot_predictor

EMBEDDED = "embedded"
MPNET = ROOT / "models" / "all-mpnet-base-v2"
PER_CLASS = (10, 20)
REQUEST_TEXTS = 16
LATENCY_TEXTS = 100
# Accuracy does not depend on threads; 1 never stalls behind a busy neighbour's core.
ACCURACY_THREADS = 1
SLICE_S = 10.0  # one timed slice of requests; --rounds of them per model and thread count
QUICK = {"train_per_class": 25, "test_per_class": 10, "latency_texts": 20}


def default_models() -> list[str]:
    """The embedded MiniLM, and all-mpnet-base-v2 where `make mpnet` puts it."""
    if MPNET.is_dir():
        return [EMBEDDED, str(MPNET)]
    say(f"no {MPNET}: `make mpnet` fetches all-mpnet-base-v2 (420 MB); measuring MiniLM only")
    return [EMBEDDED]


def model_name(model: str) -> str:
    """How the tables name a model."""
    return "all-MiniLM-L6-v2 (embedded)" if model in ("", EMBEDDED) else Path(model).name


def served_predictor(model: str, labels: list[Label]) -> Predictor:
    """The base model with a zero-shot head, built as the service builds it by default."""
    served = ServiceSettings.model_construct()  # the defaults, not this shell's LIVETUNE_*
    return zero_shot_predictor(
        None if model in ("", EMBEDDED) else model,
        labels,
        template=served.label_template,
        device=served.device,
        precision=served.precision,
        max_tokens=served.max_tokens,
        batch_size=served.inference_batch_size,
        top_k=served.top_k,
    )


def rate_config(predictor: Predictor, texts: list[str], threads: int):
    """A `run(seconds)` for interleaved_medians: texts/s of requests of 16 at `threads`."""
    pool = TextPool(texts)

    def run(seconds: float | None) -> float:
        torch.set_num_threads(threads)
        return rate_for(
            lambda n: predictor.predict(pool.take(n)), REQUEST_TEXTS, seconds or SLICE_S
        )

    return run


def speed(predictors: dict, texts: list[str], threads: list[int], args) -> dict:
    """Per model and thread count: texts/s (median of interleaved slices), one-text p50 ms.

    Models and thread counts take turns, slice by slice and text by text, so a burst of
    the neighbours' load hits them all alike.
    """
    configs = {(m, t): rate_config(p, texts, t) for m, p in predictors.items()
               for t in threads}  # fmt: skip
    rates = interleaved_medians(configs, args.rounds)
    latencies: dict = {key: [] for key in configs}
    for text in texts[: args.latency_texts]:
        for model, t in configs:
            torch.set_num_threads(t)
            started = time.perf_counter()
            predictors[model].predict([text])
            latencies[model, t].append((time.perf_counter() - started) * 1000)
    return {model: {str(t): {"texts_per_s": round(rates[model, t], 1),
                             "p50_ms": rounded(percentile(latencies[model, t], 50))}
                    for t in threads} for model in predictors}  # fmt: skip


def head_only(predictor: Predictor, train: Split, test: Split, points: dict) -> dict:
    """bench_training's logistic regression on this model's frozen embeddings, per point."""
    train_x = predictor.embeddings(train.texts).numpy()
    test_x = predictor.embeddings(test.texts).numpy()
    train_y, test_y = np.array(train.labels), np.array(test.labels)
    results = {}
    for point, draws in points.items():
        scores = [lr_accuracy(train_x, train_y, test_x, test_y, rows) for rows in draws]
        results[point] = spread(scores)
        say(f"  head-only, {point}: {results[point]['mean']:.1%}")
    return results


def accuracy(model: str, predictor: Predictor, train: Split, test: Split, points) -> dict:
    """Zero-shot accuracy as served (requests of 16), and the head-only baseline."""
    started = time.perf_counter()
    texts, n = test.texts, REQUEST_TEXTS
    answered = [
        p.label for i in range(0, len(texts), n) for p in predictor.predict(texts[i : i + n])
    ]
    zero_shot = sum(a == y for a, y in zip(answered, test.labels)) / len(test.labels)
    say(f"{model_name(model)}: zero-shot {zero_shot:.1%}")
    return {
        "zero_shot": zero_shot,
        "head_only": head_only(predictor, train, test, points),
        "seconds": round(time.perf_counter() - started, 1),
    }


def points(train: Split, draws: int, quick: bool) -> dict[str, list[list[int]]]:
    """Train rows per point: seeded draws of k a label (bench_training's), and all rows."""
    chosen = {
        f"{k}/label": [per_class(train.labels, k, s) for s in range(draws)] for k in PER_CLASS
    }
    if not quick:
        chosen["all train"] = [list(range(len(train.texts)))]
    return chosen


def versus(first: float, other: float, unit: str) -> str:
    """`other` against the first model's figure: points of accuracy, or a ratio."""
    return f"{(other - first) * 100:+.1f} pts" if unit == "pts" else f"{other / first:.2f}x"


def figures(model: dict) -> list[tuple[str, float, str]]:
    """(row title, value, unit) of one model's results, in table order."""
    rows = [("zero-shot accuracy", model["zero_shot"], "pts")]
    rows += [(f"head-only LR, {p}", s["mean"], "pts") for p, s in model["head_only"].items()]
    for t, s in model["speed"].items():
        rows.append((f"predict, {REQUEST_TEXTS} a request, {t} threads (texts/s)",
                     s["texts_per_s"], "x"))  # fmt: skip
        rows.append((f"one-text predict p50, {t} threads (ms)", s["p50_ms"], "x"))
    return rows


def markdown(results: dict) -> str:
    """One column per model, and each other model against the first."""
    models = results["models"]
    columns = [figures(m) for m in models]
    header = ("", *(m["name"] for m in models), *(f"{m['name']} / first" for m in models[1:]))
    body = []
    for i, (title, _, unit) in enumerate(columns[0]):
        values = [column[i][1] for column in columns]
        cells = [f"{v:.1%}" if unit == "pts" else f"{v:,.1f}" for v in values]
        body.append((title, *cells, *(versus(values[0], v, unit) for v in values[1:])))
    return table(header, body)


def load_data(args) -> tuple[list[Label], Split, Split]:
    """The label set (the data's categories.json, as the service reads it), train and test."""
    labels = read_labels(args.data)
    names = [label.name for label in labels]
    train, test = load_split(args.data, "train", names), load_split(args.data, "test", names)
    if args.quick:
        train = train.take(per_class(train.labels, QUICK["train_per_class"]))
        test = test.take(per_class(test.labels, QUICK["test_per_class"]))
    return labels, train, test


def parse_args(argv):
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with train/test")
    parser.add_argument(
        "--model",
        action="append",
        help=f"a base model folder or `{EMBEDDED}`, repeatable (default: MiniLM and MPNet)",
    )
    parser.add_argument("--draws", type=int, default=3, help="seeded draws per few-shot point")
    parser.add_argument(
        "--threads",
        default=f"{worker_threads(1)},1",
        help="torch threads to time at (default: the service's, the cores; and 1)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved slices per config")
    parser.add_argument(
        "--quick", action="store_true", help="25 train and 10 test texts a label, one draw"
    )
    parser.add_argument("--out", type=Path, help="JSON (default results/encoders-<data>.json)")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    """Load every model, time them in turns, then each one's accuracy; the JSON and table."""
    args = parse_args(argv)
    started, load = time.monotonic(), Path("/proc/loadavg").read_text().strip()
    threads = list(dict.fromkeys(int(t) for t in args.threads.split(",")))
    labels, train, test = load_data(args)
    if args.quick:
        args.draws, args.rounds = 1, 1
    args.latency_texts = QUICK["latency_texts"] if args.quick else LATENCY_TEXTS
    name = args.data.resolve().name
    say(f"{name}: {len(labels)} labels, {len(train.texts)} train, {len(test.texts)} test; "
        f"load {load}")  # fmt: skip
    predictors = {m: served_predictor(m, labels) for m in args.model or default_models()}
    with CpuMeter() as meter:
        speeds = speed(predictors, test.shuffled(SEED).texts, threads, args)
    say(f"speed: {speeds}, {meter.figures}")
    torch.set_num_threads(ACCURACY_THREADS)
    rows = points(train, args.draws, args.quick)
    models = [
        {"model": m, "name": model_name(m), "hidden_size": p.model.encoder.config.hidden_size,
         "speed": speeds[m], **accuracy(m, p, train, test, rows)}
        for m, p in predictors.items()
    ]  # fmt: skip
    results = {"dataset": name, "quick": args.quick, "draws": args.draws,
               "train_samples": len(train.texts), "test_samples": len(test.texts),
               "threads": threads, "rounds": args.rounds, "slice_s": SLICE_S,
               "loadavg_start": load, "speed_cpu": meter.figures, "models": models,
               "wall_s": round(time.monotonic() - started, 1)}  # fmt: skip
    write_json(args.out or RESULTS / f"encoders-{name}.json", results)
    print(markdown(results))
    return results


if __name__ == "__main__":
    main()
