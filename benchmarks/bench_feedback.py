"""Feedback benchmark: corrections stored per second over HTTP, and what logging predictions costs.

One run prints, side by side:
1. samples/s through POST /feedback, one sample per call and batches of 100 (target:
   >= 2,000 samples/s batched); every one is committed to disk (synchronous=FULL)
   before its response;
2. /predict throughput with prediction logging on and off (two servers, measured in
   alternating rounds so drift on a shared machine hits both); target: logging costs
   <= 5%.

With --store postgresql://... the same figures are measured on SQLite and then on that
PostgreSQL database (the prediction log there too), and printed side by side; the
batched target then applies to PostgreSQL. With --pooled-store as well, once more on
another database reached through a pooler (PgBouncer in transaction mode), with the
ratio of the pooled to the direct rates. With --adapters-url s3://bucket/prefix as well,
the follow time of two replicas on that store and bucket is measured after them
(benchmarks/bench_scaleout.py). Both must be disposable: an empty database or schema
(the run stores its samples there and refuses one that holds corrections already) and a
bucket prefix nothing else uses.

Data: Banking77, Casanueva et al. 2020, CC-BY-4.0, read in place from --data.

Usage, from the repository root:
    .venv/bin/python -m benchmarks.bench_feedback --data ../shared/data/banking77 [--quick]
    .venv/bin/python -m benchmarks.bench_feedback --store postgresql://user:pw@host/db \\
        [--pooled-store postgresql://user:pw@pooler:6432/db2] \\
        [--adapters-url s3://bucket/prefix --s3-endpoint-url URL] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
from pathlib import Path

from benchmarks import bench_scaleout
from benchmarks.harness.client import drive, one_text_each
from benchmarks.harness.data import DEFAULT_DATA, Split, TextPool, labels_file, load_split
from benchmarks.harness.report import RESULTS, met, say, table, write_json
from benchmarks.harness.server import running_server

DEFAULT_OUT = RESULTS / "feedback.json"
BACKENDS_OUT = RESULTS / "feedback_backends.json"  # with --store
COLUMNS = {"sqlite": "SQLite", "postgresql": "PostgreSQL", "pgbouncer": "PostgreSQL via pooler"}
TARGET_BATCHED = 2_000.0
TARGET_LOGGING_COST = 0.05


def unique_samples(rows: Split, count: int, tag: str) -> list[dict]:
    """`count` samples with distinct texts, so each one is a real insert, not a duplicate."""
    n = len(rows.texts)
    return [
        {"text": f"{rows.texts[i % n]} [{tag}{i}]", "label": rows.labels[i % n]}
        for i in range(count)
    ]


def feedback_rate(base: str, samples: list[dict], per_call: int, concurrency: int) -> dict:
    """Samples/s stored by `concurrency` clients sending `per_call` samples each call."""
    calls = [{"samples": samples[i : i + per_call]} for i in range(0, len(samples), per_call)]
    load = asyncio.run(drive(base, "/feedback", calls, concurrency))
    return {
        "samples_per_s": len(samples) / load.seconds,
        "calls": len(calls),
        "errors": load.errors(),
    }


def predict_rate(base: str, texts: list[str], seconds: float, concurrency: int) -> float:
    """Texts/s through /predict, one text per request, for `seconds`."""
    bodies = one_text_each(TextPool(texts))
    load = asyncio.run(drive(base, "/predict", bodies, concurrency, seconds))
    if load.errors():
        raise RuntimeError(f"/predict failed {load.errors()} times")
    return load.rate()


def measure(args, rows: Split, scratch: Path, store_url: str = "") -> dict:
    """/predict with and without logging in alternating rounds, then /feedback; on SQLite
    in `scratch`, or on the PostgreSQL database at `store_url`."""
    env = {"LIVETUNE_LABELS_FILE": str(labels_file(args.data))}
    if store_url:
        env["LIVETUNE_STORE_URL"] = store_url
    with contextlib.ExitStack() as servers:
        for name in ("on", "off"):
            (scratch / name).mkdir(parents=True)
        logged = servers.enter_context(running_server(scratch / "on", **env))
        unlogged = servers.enter_context(
            running_server(scratch / "off", LIVETUNE_LOG_PREDICTIONS="false", **env)
        )
        on, off = [], []
        for round_ in range(args.rounds):  # alternate, and swap who goes first, so drift hits both
            pair = [(on, logged.base), (off, unlogged.base)]
            for rates, base in pair if round_ % 2 == 0 else pair[::-1]:
                rates.append(predict_rate(base, rows.texts, args.seconds, 32))
        n = args.samples  # feedback last: the prediction comparison runs on fresh servers
        single = feedback_rate(logged.base, unique_samples(rows, n // 5, "s"), 1, args.concurrency)
        batched = feedback_rate(logged.base, unique_samples(rows, n, "b"), 100, 4)
    predict = {"with_logging": statistics.median(on), "without_logging": statistics.median(off),
               "rounds_with": on, "rounds_without": off}  # fmt: skip
    return {"predict": predict, "single": single, "batched_100": batched}


def report(results: dict) -> str:
    """Each figure beside its target."""
    single, batched, predict = results["single"], results["batched_100"], results["predict"]
    cost = 1 - predict["with_logging"] / predict["without_logging"]
    speedup = batched["samples_per_s"] / single["samples_per_s"]
    without = predict["without_logging"]
    ok = batched["samples_per_s"] >= TARGET_BATCHED and cost <= TARGET_LOGGING_COST
    return "\n".join(
        [
            "| figure | value | baseline / target |",
            "|---|---|---|",
            f"| /feedback, 1 sample per call | {single['samples_per_s']:,.0f} samples/s | |",
            f"| /feedback, 100 samples per call | {batched['samples_per_s']:,.0f} samples/s"
            f" | target >= {TARGET_BATCHED:,.0f} ({speedup:.1f}x single) |",
            f"| /predict with prediction logging | {predict['with_logging']:,.1f} texts/s"
            f" | {without:,.1f} texts/s without: cost {cost:+.1%} (target <= 5%) |",
            f"| errors | {single['errors'] + batched['errors']} | 0 |",
            f"| all targets met | {'yes' if ok else 'NO'} | |",
        ]
    )


def logging_cost(results: dict) -> float:
    """What the prediction log costs /predict: 1 - with / without."""
    return 1 - results["predict"]["with_logging"] / results["predict"]["without_logging"]


def side_by_side(results: dict[str, dict]) -> str:
    """SQLite beside PostgreSQL (and PostgreSQL through a pooler, with the ratio of the
    pooled to the direct figure); the targets apply to every PostgreSQL column."""
    names = [name for name in COLUMNS if name in results]

    def each(show) -> tuple:
        return tuple(show(results[name]) for name in names)

    def stored(key: str) -> tuple:
        return each(lambda r: f"{r[key]['samples_per_s']:,.0f} samples/s")

    def predict(key: str) -> tuple:
        return each(lambda r: f"{r['predict'][key]:,.1f} texts/s")

    postgres = [results[name] for name in names if name != "sqlite"]
    batched_ok = all(r["batched_100"]["samples_per_s"] >= TARGET_BATCHED for r in postgres)
    cost_ok = all(logging_cost(r) <= TARGET_LOGGING_COST for r in postgres)
    rows = [
        ("/feedback, 1 sample per call", *stored("single"), ""),
        ("/feedback, 100 samples per call", *stored("batched_100"), f">= 2,000: {met(batched_ok)}"),
        ("/predict, prediction log on", *predict("with_logging"), ""),
        ("/predict, prediction log off", *predict("without_logging"), ""),
        (
            "logging cost, 1 - on / off",
            *each(lambda r: f"{logging_cost(r):+.1%}"),
            f"<= 5%: {met(cost_ok)}",
        ),
        ("errors", *each(lambda r: r["single"]["errors"] + r["batched_100"]["errors"]), "0"),
    ]
    if "pgbouncer" in results:
        direct, pooled = results["postgresql"], results["pgbouncer"]
        for key, label in (("single", "1 sample"), ("batched_100", "100 samples")):
            ratio = pooled[key]["samples_per_s"] / direct[key]["samples_per_s"]
            blanks = [""] * (len(names) - 1)  # the ratio sits in the pooled column, the last
            rows.append((f"pooled / direct, {label} per call", *blanks, f"{ratio:.2f}x", ""))
    return table(("figure", *(COLUMNS[name] for name in names), "target (PostgreSQL)"), rows)


def check_empty(url: str) -> None:
    """Exit unless the database at `url` holds no corrections (their texts would clash)."""
    from training.store.postgres import PostgresStore

    store = PostgresStore(url)
    try:
        held = store.count_samples()
    finally:
        store.close()
    if held:
        raise SystemExit(f"--store holds {held} corrections already: give it an empty database")


def on_backends(args, rows: Split) -> dict:
    """SQLite, then the PostgreSQL database (then the pooled one), then (given a bucket)
    the follow time."""
    backends = [("sqlite", ""), ("postgresql", args.store)]
    if args.pooled_store:
        backends.append(("pgbouncer", args.pooled_store))
    for _, url in backends[1:]:
        check_empty(url)
    results = {}
    with tempfile.TemporaryDirectory(prefix="livetune-bench-") as scratch:
        for name, url in backends:
            say(f"measuring on {name}")
            results[name] = measure(args, rows, Path(scratch) / name, url)
    if args.adapters_url:
        say("measuring the follow time on PostgreSQL and S3")
        results["follow"] = bench_scaleout.measure(args)
    return results


def main(argv: list[str] | None = None) -> None:
    """Two servers (four with --store), the figures, the report."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument(
        "--out", type=Path, help=f"default {DEFAULT_OUT.name}, {BACKENDS_OUT.name} with --store"
    )
    parser.add_argument("--quick", action="store_true", help="fewer samples and shorter rounds")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--store",
        help="postgresql://user:password@host:5432/db of an empty, disposable database (or"
        " schema, via ?options=-csearch_path%%3D...): also measure there, beside SQLite",
    )
    parser.add_argument(
        "--pooled-store",
        help="postgresql://... of another empty, disposable database reached through a pooler"
        " (PgBouncer in transaction mode): also measure there, beside the direct --store",
    )
    bench_scaleout.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.adapters_url and not args.store:
        parser.error("--adapters-url needs --store: the replicas share both")
    if args.pooled_store and not args.store:
        parser.error("--pooled-store needs --store: the pooled figures sit beside the direct")
    args.samples, args.rounds, args.seconds = (2_000, 2, 4.0) if args.quick else (20_000, 4, 10.0)
    rows = load_split(args.data, "train")
    if args.store:
        results = on_backends(args, rows)
        write_json(args.out or BACKENDS_OUT, results)
        print(side_by_side(results))
        if "follow" in results:
            print("\n" + bench_scaleout.report(results["follow"]))
        return
    with tempfile.TemporaryDirectory(prefix="livetune-bench-") as scratch:
        results = measure(args, rows, Path(scratch))
    write_json(args.out or DEFAULT_OUT, results)
    print(report(results))


if __name__ == "__main__":
    main()
