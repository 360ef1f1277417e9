"""Prediction benchmark: the real BentoML service against the bare model, as ratios.

One run prints every figure next to its baseline:

1. raw model throughput, `Predictor.predict` in-process, over several batch sizes
   (one forward pass of that many rows per call); bf16 autocast ("auto") against
   fp32 at the best one, with top-1 agreement; and, for comparison, the same
   predictor as the service runs it (the whole batch sorted by length, then cut into
   forwards of its default rows), over several batch sizes ("as served");
2. the service (`bentoml serve service.service:Livetune`, started here as a
   subprocess) over HTTP, one text per request so that adaptive batching does the
   grouping: throughput and p50/p99 latency at several concurrencies, once per API
   worker count in --workers (default: 1, then one per core);
3. the naive baseline: one forward per request, no batching (batch size 1 in 1.);
4. ratios: the best service figure / raw best (target >= 0.9) and / naive (target >= 3),
   and / the best as-served figure (what the HTTP path costs; target >= 0.7), the last
   also as the median of paired slices: the service at its best concurrency and the
   predictor in-process at its best as-served batch, in turns on the same machine;
5. zero-shot accuracy on the Banking77 test set through POST /predict, next to
   cosine similarity to the bare label names (template "{name}", in-process);
6. everything to a JSON file (--out) and a markdown table on stdout for docs/benchmarks.md.

The box this was written for is a shared 2-core machine, so absolute times drift
from run to run. In-process configurations are measured round-robin and summarised
by their median; concurrency levels run as a ramp (the batcher has memory, see
measure_http), each as a few slices summarised by their median. Every phase records
how much CPU other processes took meanwhile (`others_cpu_share`, 1.0 = every core)
so a bad figure can be told from a noisy one. The in-process work is done and its
model freed before the server starts, so the two never compete (the paired slices load
a second copy and run it only while the server idles); the HTTP load
generator (benchmarks/harness/client.py) does share the cores with the server, and
its share is recorded too. The server runs on the LIVETUNE_* defaults (inherited
LIVETUNE_* variables are dropped) but for WORKERS, with the Banking77 labels and a
temporary data directory.

Data: Banking77, Casanueva et al. 2020, CC-BY-4.0 (train.csv / test.csv with columns
`text,category`, categories.json with the 77 label names), read in place from --data.

Usage, from the repository root:
    .venv/bin/python -m benchmarks.bench_predict --data ../shared/data/banking77 [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks.harness.client import Answer, Load, drive, one_text_each, post_all
from benchmarks.harness.data import (
    DEFAULT_DATA,
    Split,
    TextPool,
    labels_file,
    load_split,
    read_labels,
)
from benchmarks.harness.report import RESULTS, say, write_json
from benchmarks.harness.server import running_server
from benchmarks.harness.stats import CpuMeter, percentile, rounded
from benchmarks.predict_report import agreement, markdown, results
from benchmarks.predict_sweeps import (
    SERVICE_BATCH,
    at_batch,
    bare_name_labels,
    build_predictor,
    compare_precisions,
    predict_labels,
    sweep_batch_sizes,
)
from service.settings import worker_threads
from training.labels import DEFAULT_TEMPLATE, Label
from training.predictor import CPU_BF16_MIN_BATCH, forward_rows

DEFAULT_OUT = RESULTS / "predict.json"
SEED = 77
# The in-process figures use the threads the service gives a single worker (2 on two
# cores), to be comparable.
TORCH_THREADS = worker_threads(1)
LABELS_SETTING = "LABELS_FILE=<data>/categories.json"


@dataclass(frozen=True)
class Profile:
    """How long each measurement runs; --quick trades precision for a ~2-3 minute run."""

    raw_rounds: int
    raw_slice_s: float
    http_rounds: int
    http_slice_s: float
    agreement_texts: int
    accuracy_texts: int | None  # None: the whole test set


FULL = Profile(5, 2.0, 3, 5.0, agreement_texts=512, accuracy_texts=None)
QUICK = Profile(2, 0.75, 2, 2.5, agreement_texts=256, accuracy_texts=300)


@dataclass
class Dataset:
    labels: list[Label]
    test: Split  # shuffled with a fixed seed so any prefix is a sample


# --- data ------------------------------------------------------------------------------


def load_dataset(data_dir: Path) -> Dataset:
    """Banking77's labels and shuffled test split, read where they lie."""
    labels = read_labels(data_dir)
    test = load_split(data_dir, "test", known=[label.name for label in labels])
    return Dataset(labels, test.shuffled(SEED))


def accuracy_set(data: Dataset, profile: Profile) -> tuple[list[str], list[str]]:
    """The texts the accuracy figures are taken on, and their labels."""
    n = profile.accuracy_texts or len(data.test.texts)
    return data.test.texts[:n], data.test.labels[:n]


# --- in-process sweeps -----------------------------------------------------------------


def measure_in_process(data: Dataset, sizes: list[int], profile: Profile) -> dict:
    """Phases 1 and 3, plus the in-process accuracies, all before the server takes the cores."""
    torch.set_num_threads(TORCH_THREADS)
    say("in-process (before the server starts)")
    timing, texts = (profile.raw_rounds, profile.raw_slice_s), data.test.texts
    auto = build_predictor(data.labels, DEFAULT_TEMPLATE, "auto")
    fp32 = build_predictor(data.labels, DEFAULT_TEMPLATE, "fp32")
    raw = sweep_batch_sizes(auto, texts, sizes, timing)
    rows = forward_rows(auto.device, 0)
    as_served = sweep_batch_sizes(auto, texts, [b for b in sizes if b > 1], timing, rows)
    # An unbatched server runs exactly predict([text]) per request: batch size 1 above.
    naive = {"texts_per_s": raw["texts_per_s_by_batch_size"]["1"], "batch_size": 1}
    # Below CPU_BF16_MIN_BATCH rows "auto" runs fp32 anyway: nothing to compare there.
    batch = max(raw["best_batch_size"], CPU_BF16_MIN_BATCH)
    precision = compare_precisions(auto, fp32, data.test, batch, timing, profile.agreement_texts)
    del fp32
    texts, gold = accuracy_set(data, profile)
    template_labels = predict_labels(auto, texts)
    del auto  # one model in memory at a time
    bare_labels = bare_name_labels(data.labels, texts)
    say(f"  accuracy on {len(texts)} texts: template {agreement(template_labels, gold):.2%}, "
        f"bare names {agreement(bare_labels, gold):.2%}")  # fmt: skip
    return {"raw": raw, "as_served": as_served, "naive": naive, "precision": precision,
            "template_labels": template_labels, "bare_labels": bare_labels}  # fmt: skip


# --- service runs ----------------------------------------------------------------------


def one_prediction(answer: Answer) -> bool:
    """What a one-text request must get: a 200 whose JSON holds one prediction."""
    return answer.status == 200 and len(json.loads(answer.body)) == 1


def summarize_level(concurrency: int, slices: list[Load]) -> dict:
    """Median throughput of the slices; latency percentiles over all their requests."""
    latencies = [ms for s in slices for ms in s.latencies_ms(one_prediction)]
    return {
        "concurrency": concurrency,
        "texts_per_s": round(statistics.median(s.rate(one_prediction) for s in slices), 1),
        "p50_ms": rounded(percentile(latencies, 50)),
        "p99_ms": rounded(percentile(latencies, 99)),
        "requests": len(latencies),
        "errors": sum(s.errors(one_prediction) for s in slices),
    }


async def measure_level(base: str, bodies, concurrency: int, profile: Profile, server, rounds=0):
    """One concurrency level: a settling slice, then the measured ones."""
    await drive(base, "/predict", bodies, concurrency, 1.0)  # the batcher adapts to the level
    with CpuMeter(server) as cpu:
        slices = [
            await drive(base, "/predict", bodies, concurrency, profile.http_slice_s)
            for _ in range(rounds or profile.http_rounds)
        ]
    return {**summarize_level(concurrency, slices), **cpu.figures}


async def measure_http(base: str, data: Dataset, levels: list[int], profile: Profile, server):
    """Each level in turn, lightest first, then the lightest again.

    Levels are not interleaved: BentoML's batcher learns how long to hold requests
    from the waits it has seen, so a level carries over into the next. The final
    re-run of the lightest level shows how much of that lingers after a load.
    """
    bodies = one_text_each(TextPool(data.test.texts, start=len(data.test.texts) // 2))
    # The batcher calibrates itself on its first requests; keep that out of the figures.
    await drive(base, "/predict", bodies, levels[0], 2.0)
    by_level = [await measure_level(base, bodies, c, profile, server) for c in levels]
    again = await measure_level(base, bodies, levels[0], profile, server, rounds=1)
    for level in [*by_level, again]:
        say(f"  http concurrency {level['concurrency']:>3}: {level['texts_per_s']:8.1f} texts/s, "
            f"p50 {level['p50_ms']} ms, p99 {level['p99_ms']} ms, errors {level['errors']}, "
            f"others' CPU {level.get('others_cpu_share', 0):.0%}")  # fmt: skip
    best = max(by_level, key=lambda level: level["texts_per_s"])
    return {"by_concurrency": by_level, "best": best, "first_level_after_load": again}


async def measure_paired(base: str, data: Dataset, profile: Profile, batch: int, clients: int):
    """The service at `clients` and the predictor in-process as served at `batch`, slice
    for slice in turns, each idle while the other runs.

    The machine's speed drifts by up to a third between runs here (the as-served figure
    has read 342-606 texts/s), so a ratio of figures taken minutes apart is mostly that
    drift; each pair here sees the same machine, and the median pair is the figure.
    """
    predictor = build_predictor(data.labels, DEFAULT_TEMPLATE, "auto")
    rows = forward_rows(predictor.device, 0)
    in_process = at_batch(predictor, TextPool(data.test.texts), batch, profile.raw_slice_s, rows)
    bodies = one_text_each(TextPool(data.test.texts, start=len(data.test.texts) // 2))
    await drive(base, "/predict", bodies, clients, 1.0)
    pairs = []
    for _ in range(profile.raw_rounds):
        model = in_process(None)
        load = await drive(base, "/predict", bodies, clients, profile.http_slice_s)
        service = load.rate(one_prediction)
        pairs.append({"service": round(service, 1), "in_process": round(model, 1)})
    ratio = statistics.median(pair["service"] / pair["in_process"] for pair in pairs)
    say(f"  paired slices, {clients} clients vs in-process batch {batch}: median ratio {ratio:.3f}")
    return {"clients": clients, "batch": batch, "pairs": pairs, "median_ratio": round(ratio, 3)}


def service_labels(base: str, texts: list[str]) -> list[str]:
    """Top-1 labels from POST /predict, SERVICE_BATCH texts per request."""
    bodies = [{"texts": texts[i : i + SERVICE_BATCH]} for i in range(0, len(texts), SERVICE_BATCH)]
    return [item["label"] for answer in post_all(base, "/predict", bodies) for item in answer]


def measure_service(
    data: Dataset, data_dir: Path, levels, profile: Profile, workers: int, paired_batch: int
) -> dict:
    """Phase 2 against a real `bentoml serve` with `workers` API workers, torn down after,
    ending with paired slices against the predictor in-process at `paired_batch`.

    Phase 5 (accuracy through /predict) runs on every server but is reported for the
    first only: the workers serve the same model.
    """
    say(f"service (bentoml serve, {workers} worker{'s' * (workers > 1)})")
    env = {"LIVETUNE_LABELS_FILE": str(labels_file(data_dir)), "LIVETUNE_WORKERS": str(workers)}
    with tempfile.TemporaryDirectory(prefix="livetune-bench-") as tmp:
        started = time.perf_counter()
        with running_server(Path(tmp), **env) as server:
            ready_s = time.perf_counter() - started
            say(f"  every worker ready after {ready_s:.1f}s at {server.base}")
            http = asyncio.run(measure_http(server.base, data, levels, profile, server.process))
            clients = http["best"]["concurrency"]
            paired = asyncio.run(measure_paired(server.base, data, profile, paired_batch, clients))
            labels = service_labels(server.base, accuracy_set(data, profile)[0])
    return {
        "workers": workers,
        "torch_threads_per_worker": worker_threads(workers),
        "ready_s": round(ready_s, 1),
        "settings": f"LIVETUNE_* defaults but WORKERS={workers}, {LABELS_SETTING}",
        **http,
        "paired": paired,
        "labels": labels,
    }


# --- report ----------------------------------------------------------------------------


def meta(args: argparse.Namespace, data: Dataset) -> dict:
    """Where and on what the figures were taken."""
    return {
        "script": "benchmarks/bench_predict.py",
        "quick": args.quick,
        "data": str(args.data),
        "dataset": "Banking77, Casanueva et al. 2020, CC-BY-4.0",
        "labels": len(data.labels),
        "test_texts": len(data.test.texts),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": TORCH_THREADS,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


# --- entry point -----------------------------------------------------------------------


def int_list(value: str) -> list[int]:
    """argparse type: comma-separated positive integers."""
    try:
        numbers = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {value!r}"
        ) from None
    if not numbers or min(numbers) < 1:
        raise argparse.ArgumentTypeError("expected positive integers")
    return numbers


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line; batch size 1 and a sorted concurrency ramp are always measured."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    add = parser.add_argument
    add("--data", type=Path, default=DEFAULT_DATA, help="Banking77 folder (read in place)")
    add("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    add("--quick", action="store_true", help="short slices, 300 test texts: a ~2-3 minute run")
    add(
        "--workers",
        type=int_list,
        default=sorted({1, os.cpu_count() or 1}),
        help="API worker counts to measure the service with, e.g. 1,2 (default: 1 and the cores)",
    )
    add("--concurrency", type=int_list, default=[1, 8, 32, 64, 128], help="e.g. 1,8,32,64")
    add("--batch-sizes", type=int_list, default=[1, 8, 32, 64, 128], help="raw sweep")
    args = parser.parse_args(argv)
    args.batch_sizes = sorted(set(args.batch_sizes) | {1})  # batch size 1 is the naive baseline
    args.concurrency = sorted(set(args.concurrency))  # a ramp: see measure_http
    args.data = args.data.resolve()
    return args


def main(argv: list[str] | None = None) -> None:
    """Data, the in-process sweeps, one service run per worker count, the report."""
    args = parse_args(argv)
    profile = QUICK if args.quick else FULL
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the load report would drown the figures
    hf_logging.disable_progress_bar()
    data = load_dataset(args.data)
    in_process = measure_in_process(data, args.batch_sizes, profile)
    paired_batch = in_process["as_served"]["best_batch_size"]
    runs = [
        measure_service(data, args.data, args.concurrency, profile, w, paired_batch)
        for w in args.workers
    ]
    gold = accuracy_set(data, profile)[1]
    figures = results(meta(args, data), in_process, runs, gold, len(data.test.texts))
    write_json(args.out, figures)
    print(f"\nresults: {args.out}\n")
    print(markdown(figures))


if __name__ == "__main__":
    main()
