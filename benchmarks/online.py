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
    .venv/bin/python benchmarks/online.py --data ../shared/data/banking77 [--quick]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as a script, not only with -m
    sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx  # noqa: E402

from benchmarks.bench_training import lr_accuracy, say  # noqa: E402
from benchmarks.online_report import markdown, percent, plot  # noqa: E402
from tests.server import log_path, log_tail, start_server, stop_server, wait_for  # noqa: E402
from training.__main__ import LABEL_COLUMNS  # noqa: E402
from training.settings import Settings  # noqa: E402
from training.split import split_for, text_key  # noqa: E402

DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "banking77"
TEXT_COLUMNS = ("text", "sentence", "utterance", "query", "message", "content")
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
VALIDATION = Settings.model_fields["validation_percent"].default  # the service's default
BATCH = 32  # texts per /predict call, and corrections per /feedback call


@dataclass
class Dataset:
    texts: list[str]
    labels: list[str]

    def take(self, indices) -> Dataset:
        return Dataset([self.texts[i] for i in indices], [self.labels[i] for i in indices])


def read_table(path: Path, text_column: str | None, label_column: str | None) -> Dataset:
    """Texts and labels of a CSV or TSV with a header (tab by extension, else sniffed)."""
    with path.open(encoding="utf-8", newline="") as handle:
        sample = handle.read(65536)
        handle.seek(0)
        tab = path.suffix.lower() == ".tsv" or sample.count("\t") > sample.count(",")
        rows = list(csv.DictReader(handle, delimiter="\t" if tab else ","))
    header = list(rows[0]) if rows else []
    text = pick_column(path, header, text_column, TEXT_COLUMNS)
    label = pick_column(path, header, label_column, LABEL_COLUMNS)
    return Dataset([r[text] for r in rows], [r[label].strip() for r in rows])


def pick_column(path: Path, header: list[str], wanted: str | None, known) -> str:
    for name in [wanted] if wanted else known:
        if name in header:
            return name
    raise SystemExit(f"{path}: no column {wanted or ' / '.join(known)} in {header}")


def load_data(args) -> tuple[Dataset, Dataset]:
    """(train, test) from --train/--test, or train.* and test.* in --data."""
    files = []
    for split, given in (("train", args.train), ("test", args.test)):
        found = sorted(args.data.glob(f"{split}.[ct]sv")) if given is None else [given]
        if not found:
            raise SystemExit(f"no {split}.csv or {split}.tsv in {args.data}; or give --{split}")
        files.append(found[0])
    train, test = (read_table(f, args.text_column, args.label_column) for f in files)
    unknown = set(test.labels) - set(train.labels)
    if unknown:
        raise SystemExit(f"test labels missing from the train data: {sorted(unknown)[:10]}")
    return train, test


def quick_subset(train: Dataset, test: Dataset, seed: int) -> tuple[Dataset, Dataset]:
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


class Service:
    """The HTTP calls the benchmark makes, and a watcher of /status for swap times."""

    def __init__(self, base: str):
        self.base = base
        self.http = httpx.Client(base_url=base, timeout=120)
        self.served_since: dict[str, float] = {}  # adapter -> first time a worker served it
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, daemon=True)
        self._watcher.start()

    def predict(self, texts: list[str]) -> list[dict]:
        answer = self.http.post("/predict", json={"texts": texts})
        answer.raise_for_status()
        return answer.json()

    def correct(self, answers: list[dict], labels: list[str]) -> None:
        """Corrections by prediction_id: the client does not resend the text."""
        samples = [
            {"prediction_id": a["prediction_id"], "label": y, "source": "online-bench"}
            for a, y in zip(answers, labels)
        ]
        self.http.post("/feedback", json={"samples": samples}).raise_for_status()

    def status(self) -> dict:
        status = self.http.get("/status").raise_for_status().json()
        self._note(status["workers"])
        return status

    def _note(self, workers: list[dict]) -> None:
        for worker in workers:
            first = self.served_since.get(worker["adapter"], worker["since"])
            self.served_since[worker["adapter"]] = min(first, worker["since"])

    def _watch(self) -> None:
        with httpx.Client(base_url=self.base, timeout=30) as http:
            while not self._stop.wait(0.5):
                try:
                    self._note(http.get("/status").json()["workers"])
                except (httpx.HTTPError, ValueError, KeyError):
                    continue

    def close(self) -> None:
        self._stop.set()
        self._watcher.join()
        self.http.close()


def stream(service: Service, data: Dataset) -> dict:
    """predict -> correction for every sample; the accuracy of the served predictions."""
    hits = 0
    for start in range(0, len(data.texts), BATCH):
        texts, labels = data.texts[start : start + BATCH], data.labels[start : start + BATCH]
        answers = service.predict(texts)
        hits += sum(a["label"] == y for a, y in zip(answers, labels))
        service.correct(answers, labels)
    return {"samples": len(data.texts), "served_accuracy": hits / max(1, len(data.texts))}


def evaluate(service: Service, test: Dataset) -> dict:
    """Accuracy on the test set through /predict, and the adapter versions that answered."""
    chunks = [range(i, min(i + 64, len(test.texts))) for i in range(0, len(test.texts), 64)]
    with ThreadPoolExecutor(2) as pool:
        answers = pool.map(lambda c: service.predict([test.texts[i] for i in c]), chunks)
        answers = [a for chunk in answers for a in chunk]
    hits = sum(a["label"] == y for a, y in zip(answers, test.labels))
    return {
        "accuracy": hits / len(test.labels),
        "adapters": sorted({a["adapter"] for a in answers}),
    }


def caught_up(status: dict) -> bool:
    """Nothing pending, no run in progress, every worker serving CURRENT."""
    last = status["last_training_run"]
    running = last is not None and last["state"] == "running"
    served = {w["adapter"] for w in status["workers"]}
    return status["pending_samples"] == 0 and not running and served == {status["active_adapter"]}


def wait_caught_up(service: Service, timeout: float) -> dict:
    started = time.monotonic()
    while not (done := caught_up(status := service.status())):
        if time.monotonic() - started > timeout:
            break
        time.sleep(1.0)
    return {
        "caught_up": done,
        "waited_s": round(time.monotonic() - started, 1),
        "pending": status["pending_samples"],
        "active": status["active_adapter"],
    }


def run_stream(service: Service, train: Dataset, test: Dataset, points, timeout) -> list[dict]:
    curve, done, t0 = [], 0, time.monotonic()
    for point in points:
        segment = stream(service, train.take(range(done, point)))
        done = point
        wait = wait_caught_up(service, timeout)
        measured = evaluate(service, test)
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


def training_runs(data_dir: Path, served_since: dict[str, float]) -> list[dict]:
    """Every run of the trainer: trigger -> finish (promotion) -> first served by a worker."""
    from training.store import SQLiteFeedbackStore

    store = SQLiteFeedbackStore(data_dir)
    runs = list(reversed(store.runs(limit=100_000)))
    store.close()
    records = []
    for run in runs:
        gate = run.report.get("gate", {})
        served = served_since.get(run.candidate) if run.candidate else None
        finished = run.finished_at or run.started_at
        records.append(
            {
                "id": run.id,
                "trigger": run.trigger,
                "state": run.state,
                "reason": run.reason,
                "train_samples": run.train_samples,
                "validation_samples": run.validation_samples,
                "current_accuracy": gate.get("current_accuracy"),
                "candidate_accuracy": gate.get("candidate_accuracy"),
                "candidate": run.candidate,
                "started_at": run.started_at,
                "trigger_to_finish_s": round(finished - run.started_at, 1),
                "trigger_to_served_s": round(served - run.started_at, 1) if served else None,
            }
        )
    return records


def head_only(train: Dataset, test: Dataset, sizes: list[int], base_model: str, trained) -> dict:
    """bench_training's baseline (logistic regression, C=10, on frozen embeddings of the same
    base model) on the first N streamed samples, and on those of them the trainer trains on
    (`trained`: not held out for validation), for each N."""
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
        if len(set(train_y[rows])) < 2:
            return None  # a classifier needs two classes
        return lr_accuracy(train_x, train_y, test_x, test_y, rows)

    scores: dict[str, dict[int, float | None]] = {"all": {}, "train_split": {}}
    for n in sorted(set(sizes)):
        scores["all"][n] = score(list(range(n)))
        scores["train_split"][n] = score([i for i in range(n) if trained[i]])
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


def serve_and_stream(args, train: Dataset, test: Dataset, points: list[int]) -> dict:
    """The real service on a fresh data directory; the stream, checkpoints and run records."""
    with tempfile.TemporaryDirectory(prefix="livetune-online-") as tmp:
        labels_file = Path(tmp) / "labels.json"
        labels_file.write_text(json.dumps(sorted(set(train.labels))))
        env = service_env(args, labels_file)
        say(f"service settings: {env}")
        process, base = start_server(Path(tmp), **env)
        try:
            wait_for(f"{base}/readyz", process, timeout=300)
            service = Service(base)
            try:
                curve = run_stream(service, train, test, points, args.catch_up_timeout)
                workers = service.status()["workers"]
            finally:
                service.close()
        except Exception:
            say(log_tail(log_path(Path(tmp), int(base.rsplit(":", 1)[1]))))
            raise
        finally:
            stop_server(process)
        runs = training_runs(Path(tmp) / "data", service.served_since)
    swaps = {
        "promotions": sum(r["state"] == "promoted" for r in runs),
        "versions_served": len(set(service.served_since) - {"base"}),
        "worker_swaps": sum(w["swaps"] for w in workers),
        "failed_swaps": sum(w["failed_swaps"] for w in workers),
    }
    settings = {k: v for k, v in env.items() if k != "LIVETUNE_LABELS_FILE"}
    return {"curve": curve, "runs": runs, "swaps": swaps, "service_settings": settings}


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with train/test")
    parser.add_argument("--train", type=Path, help="train CSV/TSV (default: DATA/train.*)")
    parser.add_argument("--test", type=Path, help="test CSV/TSV (default: DATA/test.*)")
    parser.add_argument("--text-column", help=f"default: the first of {', '.join(TEXT_COLUMNS)}")
    parser.add_argument("--label-column", help=f"default: the first of {', '.join(LABEL_COLUMNS)}")
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


def main(argv=None) -> dict:
    args = parse_args(argv)
    started = time.monotonic()
    train, test = load_data(args)
    name = args.train.stem if args.train else args.data.resolve().name
    per_class = [int(k) for k in args.per_class.split(",") if k]
    if args.quick:
        train, test = quick_subset(train, test, args.seed)
        per_class = list(QUICK["per_class"])
    order = list(range(len(train.texts)))
    random.Random(args.seed).shuffle(order)
    train = train.take(order)
    n_labels = len(set(train.labels))
    total = min(len(train.texts), max(per_class) * n_labels) if args.quick else len(train.texts)
    points = checkpoints(n_labels, total, per_class, args.every)
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
    results.update(serve_and_stream(args, train.take(range(total)), test, points))
    percent = float(results["service_settings"].get("LIVETUNE_VALIDATION_PERCENT", VALIDATION))
    trained = [split_for(text_key(text), percent) == "train" for text in train.texts]
    sizes = [p for p in points if p] + [len(train.texts)]
    scores = head_only(train, test, sizes, args.base_model, trained)
    results["baselines"] = {
        "zero_shot": results["curve"][0]["accuracy"],
        "head_only": {str(n): a for n, a in scores["all"].items() if n <= total},
        "head_only_train_split": {
            str(n): a for n, a in scores["train_split"].items() if n <= total
        },
        "head_only_full": scores["all"][len(train.texts)],
    }
    results["wall_s"] = round(time.monotonic() - started, 1)
    out = args.out or REPO_ROOT / "benchmarks" / "results" / f"online-{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    plot(results, args.plot or out.with_suffix(".png"))
    print(markdown(results))
    return results


if __name__ == "__main__":
    main()
