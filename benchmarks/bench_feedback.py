"""Feedback benchmark: corrections stored per second over HTTP, and what logging predictions costs.

One run prints, side by side:
1. samples/s through POST /feedback, one sample per call and batches of 100 (target:
   >= 2,000 samples/s batched); every one is committed to disk (synchronous=FULL)
   before its response;
2. /predict throughput with prediction logging on and off (two servers, measured in
   alternating rounds so drift on a shared machine hits both); target: logging costs
   <= 5%.

Data: Banking77, Casanueva et al. 2020, CC-BY-4.0, read in place from --data.

Usage, from the repository root:
    .venv/bin/python benchmarks/bench_feedback.py --data ../shared/data/banking77 [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as a script, not only with -m
    sys.path.insert(0, str(REPO_ROOT))

import httpx  # noqa: E402

from benchmarks.bench_predict import DEFAULT_DATA  # noqa: E402
from tests.server import free_port, log_path, log_tail, start_server, stop_server, wait_for  # noqa: E402

DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "feedback.json"
TARGET_BATCHED = 2_000.0
TARGET_LOGGING_COST = 0.05


def load_train(data: Path) -> list[tuple[str, str]]:
    with open(data / "train.csv", encoding="utf-8", newline="") as handle:
        return [(row["text"], row["category"]) for row in csv.DictReader(handle)]


def unique_samples(rows: list[tuple[str, str]], count: int, tag: str) -> list[dict]:
    """`count` samples with distinct texts, so each one is a real insert, not a duplicate."""
    return [
        {"text": f"{rows[i % len(rows)][0]} [{tag}{i}]", "label": rows[i % len(rows)][1]}
        for i in range(count)
    ]


async def feedback_rate(base: str, samples: list[dict], per_call: int, concurrency: int) -> dict:
    """Samples/s stored by `concurrency` clients sending `per_call` samples each call."""
    calls = [samples[i : i + per_call] for i in range(0, len(samples), per_call)]
    queue = iter(calls)
    errors = 0

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal errors
        for batch in queue:
            response = await client.post("/feedback", json={"samples": batch})
            errors += response.status_code != 200

    start = time.perf_counter()
    async with httpx.AsyncClient(base_url=base, timeout=60, trust_env=False) as client:
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    return {"samples_per_s": len(samples) / elapsed, "calls": len(calls), "errors": errors}


async def predict_rate(base: str, texts: list[str], seconds: float, concurrency: int) -> float:
    """Texts/s through /predict, one text per request, for `seconds`."""
    done, deadline = 0, time.perf_counter() + seconds

    async def client_loop(client: httpx.AsyncClient, offset: int) -> None:
        nonlocal done
        i = offset
        while time.perf_counter() < deadline:
            response = await client.post("/predict", json={"texts": [texts[i % len(texts)]]})
            response.raise_for_status()
            done += 1
            i += concurrency

    start = time.perf_counter()
    async with httpx.AsyncClient(base_url=base, timeout=60, trust_env=False) as client:
        await asyncio.gather(*(client_loop(client, k) for k in range(concurrency)))
    return done / (time.perf_counter() - start)


def start(data: Path, state: Path, **extra: str) -> tuple:
    state.mkdir(parents=True, exist_ok=True)
    port = free_port()
    labels_file = str(data / "categories.json")
    process, base = start_server(state, port, LIVETUNE_LABELS_FILE=labels_file, **extra)
    try:
        wait_for(f"{base}/readyz", process)
    except BaseException:
        print(log_tail(log_path(state, port)), file=sys.stderr)
        stop_server(process)
        raise
    return process, base


def measure(args, rows: list[tuple[str, str]], scratch: Path) -> dict:
    results: dict = {}
    logged, base_on = start(args.data, scratch / "on")
    unlogged, base_off = start(args.data, scratch / "off", LIVETUNE_LOG_PREDICTIONS="false")
    try:
        texts = [text for text, _ in rows]
        on, off = [], []
        for round_ in range(args.rounds):  # alternate, and swap who goes first, so drift hits both
            pair = [(on, base_on), (off, base_off)]
            for rates, base in pair if round_ % 2 == 0 else pair[::-1]:
                rates.append(asyncio.run(predict_rate(base, texts, args.seconds, 32)))
        results["predict"] = {
            "with_logging": statistics.median(on),
            "without_logging": statistics.median(off),
            "rounds_with": on,
            "rounds_without": off,
        }
        n = args.samples  # feedback last: the prediction comparison runs on fresh servers
        results["single"] = asyncio.run(
            feedback_rate(base_on, unique_samples(rows, n // 5, "s"), 1, args.concurrency)
        )
        results["batched_100"] = asyncio.run(
            feedback_rate(base_on, unique_samples(rows, n, "b"), 100, 4)
        )
    finally:
        stop_server(logged)
        stop_server(unlogged)
    return results


def report(results: dict) -> str:
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--quick", action="store_true", help="fewer samples and shorter rounds")
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args(argv)
    args.samples, args.rounds, args.seconds = (2_000, 2, 4.0) if args.quick else (20_000, 4, 10.0)
    rows = load_train(args.data)
    with tempfile.TemporaryDirectory(prefix="livetune-bench-") as scratch:
        results = measure(args, rows, Path(scratch))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(report(results))


if __name__ == "__main__":
    main()
