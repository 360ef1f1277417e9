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
import tempfile
import time
from pathlib import Path

from benchmarks.harness.data import Split, add_data_arguments
from benchmarks.harness.report import RESULTS, say, write_json
from benchmarks.harness.server import running_server
from benchmarks.online_baselines import baselines
from benchmarks.online_data import PER_CLASS, QUICK, add_variant_arguments, prepare
from benchmarks.online_report import markdown, never_worse, plot, worse_promotions
from benchmarks.online_service import (
    BATCH,
    Service,
    evaluate,
    remembered,
    stream,
    training_runs,
    wait_caught_up,
)
from training.split import text_key

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
        # corrections the first promoted adapter's run had (its data cursor: with
        # cross-validation the scored texts are the trained ones, not extra)
        "first_promotion_at": first and first["data_cursor"],
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
    add_variant_arguments(parser)
    return parser.parse_args(argv)


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
    results["never_worse"] = never_worse(results)
    results["worse_promotions"] = worse_promotions(results["runs"])
    results["wall_s"] = round(time.monotonic() - started, 1)
    out = args.out or RESULTS / f"online-{name}.json"
    write_json(out, results)
    plot(results, args.plot or out.with_suffix(".png"))
    print(markdown(results))
    return results


if __name__ == "__main__":
    main()
