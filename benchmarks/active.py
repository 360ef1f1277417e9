"""Active-learning benchmark: the same label budget spent in random order and through the
review queue, on the real service through its REST API.

Two phases. `--offline` compares every ranking (margin, entropy, diverse, shares of
random; benchmarks/active_offline.py) on the head-only baseline, cheaply. The REST phase
runs the real `bentoml serve` (trainer included) twice on fresh data directories:
(1) random order: predict -> correction by prediction_id, as benchmarks/online.py streams;
(2) the queue: the whole train pool goes through /predict first, then a simulated reviewer
labels GET /review batches from the ground truth. The trainer trains on its own trigger
in both; at each checkpoint (so many labels a class) the stream waits for it to catch up
and the test set goes through /predict. Plus the head-only baseline on the random order.

Usage, from the repository root:
    .venv/bin/python -m benchmarks.active --data ../shared/data/banking77 --offline
    .venv/bin/python -m benchmarks.active --data ../shared/data/banking77 --strategy coverage
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from benchmarks.active_offline import compare
from benchmarks.active_report import markdown, offline_markdown, plot, plot_offline
from benchmarks.harness.client import post_all
from benchmarks.harness.data import Split, add_data_arguments
from benchmarks.harness.report import say, write_json
from benchmarks.harness.server import ROOT, running_server, wait_until
from benchmarks.online import service_env
from benchmarks.online_baselines import head_only
from benchmarks.online_data import checkpoints, load_data
from benchmarks.online_service import Service, evaluate, stream, training_runs, wait_caught_up
from training.settings import CoreSettings
from training.split import text_key

PER_CLASS = (5, 10, 20)
DOCS = ROOT / "docs"
PREDICT_BATCH = 64


def queue_env(args, train: Split) -> dict[str, str]:
    """The review queue's settings: the whole pool ranked, the strategy under test."""
    return {
        "LIVETUNE_REVIEW_STRATEGY": args.strategy,
        "LIVETUNE_REVIEW_RANDOM_SHARE": str(args.random_share),
        "LIVETUNE_REVIEW_POOL": str(2 * len(train.texts)),
        "LIVETUNE_REVIEW_LEASE_S": "86400",  # a skipped test text stays skipped
    }


def predict_pool(service: Service, train: Split, data_dir: Path) -> None:
    """Every train text through /predict, and remembered by the prediction log."""
    bodies = [
        {"texts": train.texts[i : i + PREDICT_BATCH]}
        for i in range(0, len(train.texts), PREDICT_BATCH)
    ]
    post_all(service.base, "/predict", bodies, clients=2)
    from training.store import SQLiteFeedbackStore  # the log is written off the request path

    store = SQLiteFeedbackStore(data_dir)
    try:
        distinct = len({text_key(text) for text in train.texts})
        wait_until(lambda: len(store.latest_prediction_for_text(train.texts)) >= distinct)
    finally:
        store.close()


def label_from_queue(service: Service, truth: dict[str, str], count: int, batch: int) -> dict:
    """A reviewer working through GET /review batches until `count` labels are sent.

    `truth` holds each train text's label by its key (the service answers a text as it
    stored it). The test set's own predictions are in the queue too (each checkpoint
    scores it through /predict): the reviewer skips them, so no test label is ever trained
    on, and its long lease keeps them from coming back."""
    sent = calls = skipped = 0
    while sent < count:
        limit = min(batch, count - sent)
        answer = service.http.get("/review", params={"limit": limit, "source": "bench"})
        items = answer.raise_for_status().json()["items"]
        calls += 1
        if not items:
            break  # the queue is empty
        samples = [
            {"prediction_id": i["prediction_id"], "label": truth[key], "source": "bench"}
            for i in items
            if (key := text_key(i["text"])) in truth
        ]
        skipped += len(items) - len(samples)
        if samples:
            service.http.post("/feedback", json={"samples": samples}).raise_for_status()
        sent += len(samples)
    return {"samples": sent, "review_calls": calls, "skipped_test_texts": skipped}


def paced(service: Service, truth: dict[str, str], count: int, args) -> dict:
    """`count` labels from the queue; with --pace N the reviewer waits for the trainer to
    catch up after every N (a person labels far slower than the simulated one, so the
    adapter in service follows the labels instead of lagging a whole checkpoint)."""
    step = args.pace or count
    totals = {"samples": 0, "review_calls": 0, "skipped_test_texts": 0, "waits": 0}
    while totals["samples"] < count:
        got = label_from_queue(service, truth, min(step, count - totals["samples"]), args.batch)
        totals = {k: totals[k] + got.get(k, 0) for k in totals}
        if not got["samples"]:
            break  # the queue is empty
        if args.pace and totals["samples"] < count:
            wait_caught_up(service, args.catch_up_timeout)
            totals["waits"] += 1
    return totals


def run_arm(args, arm: str, train: Split, test: Split, points: list[int]) -> dict:
    """One arm on a fresh service: its learning curve and its training runs."""
    with tempfile.TemporaryDirectory(prefix=f"livetune-active-{arm}-") as tmp:
        labels_file = Path(tmp) / "labels.json"
        labels_file.write_text(json.dumps(sorted(set(train.labels))))
        # The test set goes through this same server: self-training would learn its texts.
        # Off unless --set turns it on; the rankings were compared without it.
        env = {"LIVETUNE_SELF_TRAINING_THRESHOLD": "0", **service_env(args, labels_file)}
        if arm == "queue":
            env.update(queue_env(args, train))
        with running_server(Path(tmp), ready_timeout=300, **env) as server:
            service = Service(server.base)
            try:
                if arm == "queue":
                    started = time.monotonic()
                    predict_pool(service, train, server.data_dir)
                    took = time.monotonic() - started
                    say(f"{arm}: {len(train.texts)} texts predicted in {took:.0f} s")
                curve = checkpoints_of(service, arm, train, test, points, args)
            finally:
                service.close()
            runs = training_runs(server.data_dir, service.served_since)
    return {"curve": curve, "runs": runs}


def checkpoints_of(service, arm, train, test, points, args) -> list[dict]:
    """Label up to each checkpoint (by arm), wait for the trainer, score the test set."""
    truth = {text_key(text): label for text, label in zip(train.texts, train.labels)}
    curve, done, t0 = [], 0, time.monotonic()
    for point in points:
        if arm == "random":
            segment = stream(service, train.take(range(done, point)))
        else:
            segment = paced(service, truth, point - done, args)
        done = point
        wait = wait_caught_up(service, args.catch_up_timeout)
        measured = evaluate(service, test)
        curve.append({"samples": point, **measured, **wait, "stream": segment,
                      "at_s": round(time.monotonic() - t0, 1)})  # fmt: skip
        say(f"{arm}: {point} labels: accuracy {measured['accuracy']:.1%} by {measured['adapters']}")
    return curve


def earlier_random(path: Path, name: str, seed: int, points: list[int]) -> dict:
    """The random-order arm and the head-only baseline of an earlier run of the same data
    and seed at these checkpoints (read once the queue arm is done: the two may overlap)."""
    earlier = json.loads(path.read_text())
    missing = set(points) - set(earlier["points"])
    if (earlier["dataset"], earlier["seed"]) != (name, seed) or missing:
        raise SystemExit(f"{path} is another data set or seed, or lacks a checkpoint")
    curve = [c for c in earlier["random"]["curve"] if c["samples"] in points]
    head = {k: v for k, v in (earlier.get("head_only") or {}).items() if int(k) in points}
    return {"random": {**earlier["random"], "curve": curve}, "head_only": head}


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_arguments(parser)
    parser.add_argument("--base-model", default="", help="LIVETUNE_BASE_MODEL (default embedded)")
    parser.add_argument("--per-class", default=",".join(map(str, PER_CLASS)))
    parser.add_argument("--offline", action="store_true", help="compare every ranking offline")
    parser.add_argument("--rankings", default="", help="--offline: only these (comma-separated)")
    parser.add_argument("--strategy", default="coverage", help="LIVETUNE_REVIEW_STRATEGY")
    parser.add_argument("--random-share", type=float, default=0.0)
    parser.add_argument(
        "--pace", type=int, default=0, help="queue arm: wait for the trainer every N labels"
    )
    parser.add_argument(
        "--random-from", type=Path, help="take the random-order arm from this earlier JSON"
    )
    parser.add_argument(
        "--batch", type=int, default=0, help="labels a /review call (default: one a label)"
    )
    parser.add_argument("--catch-up-timeout", type=float, default=1200.0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="JSON (default docs/active_<data>[_offline].json)")
    parser.add_argument("--every", type=int, default=None, help=argparse.SUPPRESS)  # online's
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    started = time.monotonic()
    train, test = load_data(args)
    train = train.shuffled(args.seed)
    name = args.train.stem if args.train else args.data.resolve().name
    n_labels = len(set(train.labels))
    args.batch = args.batch or min(n_labels, 100)
    per_class = [int(k) for k in args.per_class.split(",") if k]
    points = [
        p
        for p in checkpoints(n_labels, len(train.texts), per_class, None)
        if p <= max(per_class) * n_labels
    ]
    results = {"dataset": name, "n_labels": n_labels, "train_samples": len(train.texts),
               "test_samples": len(test.texts), "seed": args.seed, "batch": args.batch,
               "points": points}  # fmt: skip
    say(f"{name}: {n_labels} labels, checkpoints {points}, {args.batch} labels a /review call")
    if args.offline:
        template = CoreSettings.model_fields["label_template"].default
        call = min(args.batch, n_labels, 100)  # one REST reviewer's /review call
        rankings = args.rankings.split(",") if args.rankings else None
        curves = compare(train, test, [p for p in points if p], args.batch, args.base_model,
                         template, args.seed, call, rankings)  # fmt: skip
        results["offline"] = {k: {str(n): a for n, a in v.items()} for k, v in curves.items()}
        out = args.out or DOCS / f"active_{name}_offline.json"
        write_json(out, results)
        plot_offline(results, out.with_suffix(".png"))
        print(offline_markdown(results))
        return results
    results.update(strategy=args.strategy, random_share=args.random_share, pace=args.pace)
    for arm in ("queue", "random"):
        if arm == "random" and args.random_from:  # not ranked by the queue: run it once
            results.update(earlier_random(args.random_from, name, args.seed, points))
            continue
        results[arm] = run_arm(args, arm, train, test, points)
        write_json(args.out or DOCS / f"active_{name}.json", results)  # partial results survive
    if not results.get("head_only"):
        sizes = [p for p in points if p]
        scores = head_only(train, test, sizes, args.base_model, lambda n: [True] * n)
        results["head_only"] = {str(n): a for n, a in scores["all"].items()}
    results["wall_s"] = round(time.monotonic() - started, 1)
    out = args.out or DOCS / f"active_{name}.json"
    write_json(out, results)
    plot(results, out.with_suffix(".png"))
    print(markdown(results))
    return results


if __name__ == "__main__":
    main()
