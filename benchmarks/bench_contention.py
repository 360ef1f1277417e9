"""Contention benchmark: training speed and serving latency when another job holds a core.

One run prints, side by side, for the old thread policy (torch threads = every core, set
once) and the new one (training/threads.py: the cores other processes leave free,
looked at again during the run):

1. training throughput, samples/s of real LoRA steps on the embedded MiniLM at the
   trainer's niceness (19), idle, with a busy process (`while True: pass`, nice 0)
   from the start, and (not with --quick) with one that starts midway through the
   run; as ratios to the same policy's idle figure (target: new >= 0.5x);
2. serving latency, p50/p99 of one-text /predict requests against a real `bentoml
   serve` (trainer off), with the busy process running and a training run of each
   policy going on meanwhile, and with no training at all for reference (target:
   new p99 <= old p99 within the noise of a shared host, TARGET_P99).

The training runs in a child process (`--worker`) niced as the Trainer service is, so
the load generator and the server keep normal priority. Policies alternate round by
round, since drift on a shared machine hits both. Each cell and phase waits (up to
--quiet-wait-s) for the other processes to go quiet, and each training cell records how
many cores they kept busy meanwhile (`others_cores`, the busy process included): a cell
with more than the busy process's share plus QUIET_CORES is noisy, and figures are
averaged over the clean cells where there are any. Read ratios, not absolute times.

Data: /work/shared/data/sentiment (train.csv / test.csv, `text,category`, 2 labels).

Usage, from the repository root:
    .venv/bin/python -m benchmarks.bench_contention [--quick] [--rounds 2 --train-s 30]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

from benchmarks.harness.client import drive, one_text_each
from benchmarks.harness.data import Split, TextPool, labels_file, load_split, read_labels
from benchmarks.harness.report import RESULTS, say, table, write_json
from benchmarks.harness.server import ROOT, running_server
from benchmarks.harness.stats import percentile, rounded
from training import threads
from training.adapters import attach_lora
from training.labels import DEFAULT_TEMPLATE
from training.predictor import zero_shot_predictor
from training.trainer import TrainConfig, Trainer

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "sentiment"
DEFAULT_OUT = RESULTS / "contention.json"
TRAIN_SAMPLES = 386  # the run
TRAINER_NICE = 19  # JobSettings.train_nice's default
POLICIES = ("old", "new")
TARGET_KEPT = 0.5
TARGET_P99 = 1.1  # new / old: 10% for the noise of a shared host
QUIET_CORES = 0.3  # other processes' load below which the host counts as quiet
EXPECTED_OTHERS = {"idle": 0.0, "busy": 1.0, "busy_midway": 2 / 3}  # the busy process's
MARK = "@@ "  # the worker's protocol lines, among whatever libraries print


# --- the training worker: a child process at the trainer's niceness ----------------------


def worker(data_dir: Path) -> None:
    """Load the model once, then train as told: `old|new SECONDS` per line on stdin."""
    labels = read_labels(data_dir)
    train = load_split(data_dir, "train").shuffled(0).take(range(TRAIN_SAMPLES))
    predictor = zero_shot_predictor(None, labels, template=DEFAULT_TEMPLATE, device="cpu")
    attach_lora(predictor.model, TrainConfig())
    names = [label.name for label in labels]
    trainer = partial(Trainer, predictor.model, predictor.tokenizer, names)
    os.nice(TRAINER_NICE)
    print(MARK + "ready", flush=True)
    for line in sys.stdin:
        policy, seconds = line.split()
        print(MARK + json.dumps(timed_run(trainer, train, policy, float(seconds))), flush=True)


def claim_threads(policy: str) -> list[int]:
    """Set torch's threads as `policy` does; the list fills with every count it applies."""
    if policy == "old":  # TrainingJob._claim_device before training/threads.py
        threads.release()
        torch.set_num_threads(os.cpu_count() or 1)
        return [torch.get_num_threads()]
    applied = []
    threads.govern(0, apply=lambda n: (applied.append(n), torch.set_num_threads(n)))
    return applied


def timed_run(trainer: partial, train: Split, policy: str, seconds: float) -> dict:
    """One LoRA run of `seconds` under `policy`: its speed, threads, and the others' load."""
    config = TrainConfig(head_fit_steps=0, min_steps=0, epochs=1e6, max_seconds=seconds)
    applied = claim_threads(policy)
    before = threads.read_cpu(threads.affinity())
    print(MARK + "started", flush=True)
    result = trainer(config).train(train.texts, train.labels)
    others = threads.others_busy(before, threads.read_cpu(threads.affinity()))
    return {
        "samples_per_s": round(result.samples_seen / result.seconds, 1),
        "steps": result.steps,
        "threads": applied,
        "others_cores": round(others, 2),
    }


class TrainingWorker:
    """The `--worker` child: `train` runs one timed training run in it."""

    def __init__(self, data_dir: Path):
        command = [sys.executable, "-m", "benchmarks.bench_contention", "--worker"]
        self.process = subprocess.Popen(
            [*command, "--data", str(data_dir)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._expect()

    def _expect(self) -> str:
        for line in self.process.stdout:
            if line.startswith(MARK):
                return line[len(MARK) :].strip()
        raise RuntimeError("the training worker exited")

    def train(self, policy: str, seconds: float, meanwhile=None) -> dict:
        """Train for `seconds` under `policy`; `meanwhile()` runs here once training started."""
        self.process.stdin.write(f"{policy} {seconds}\n")
        self.process.stdin.flush()
        self._expect()  # "started"
        extra = meanwhile() if meanwhile else None
        figures = json.loads(self._expect())
        return figures if extra is None else {**figures, **extra}

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


@contextlib.contextmanager
def busy_core():
    """An unrelated job that keeps one core busy at normal priority."""
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield hog
    finally:
        hog.kill()
        hog.wait()


def wait_for_quiet(limit_s: float) -> float:
    """Wait, `limit_s` at most, till other processes keep < QUIET_CORES busy; what they did."""
    cpus = threads.affinity()
    deadline = time.monotonic() + limit_s
    while (before := threads.read_cpu(cpus)) is not None:
        time.sleep(2.0)
        others = threads.others_busy(before, threads.read_cpu(cpus))
        if others < QUIET_CORES or time.monotonic() >= deadline:
            return others
    return 0.0  # no /proc/stat: nothing to wait for


def started_midway(delay_s: float, stack: contextlib.ExitStack):
    """A `meanwhile` that starts the busy process `delay_s` into the run."""

    def start() -> None:
        time.sleep(delay_s)
        stack.enter_context(busy_core())

    return start


# --- phase 1: training throughput ---------------------------------------------------------


def measure_training(trainer: TrainingWorker, args) -> dict:
    """Every policy idle, busy from the start and (full run) busy from midway, by rounds."""
    cells: dict[str, dict[str, list]] = {p: {} for p in POLICIES}
    conditions = ["idle", "busy"] + ([] if args.quick else ["busy_midway"])
    for round_ in range(args.rounds):
        for policy in POLICIES if round_ % 2 == 0 else POLICIES[::-1]:
            for condition in conditions:
                wait_for_quiet(args.quiet_wait_s)
                with contextlib.ExitStack() as stack:
                    meanwhile = None
                    if condition == "busy":
                        stack.enter_context(busy_core())
                    elif condition == "busy_midway":
                        meanwhile = started_midway(args.train_s / 3, stack)
                    figures = trainer.train(policy, args.train_s, meanwhile)
                noise = figures["others_cores"] - EXPECTED_OTHERS[condition]
                figures["clean"] = noise <= QUIET_CORES
                say(f"training, {policy} policy, {condition}: {figures}")
                cells[policy].setdefault(condition, []).append(figures)
    return {policy: summarize_training(by_condition) for policy, by_condition in cells.items()}


def summarize_training(by_condition: dict[str, list]) -> dict:
    """Mean samples/s per condition over its clean runs (all if none), and / idle."""
    summary = {}
    for condition, runs in by_condition.items():
        chosen = [run for run in runs if run["clean"]] or runs
        rate = sum(run["samples_per_s"] for run in chosen) / len(chosen)
        clean = f"{sum(run['clean'] for run in runs)}/{len(runs)}"
        summary[condition] = {"samples_per_s": round(rate, 1), "clean": clean, "runs": runs}
    idle = summary["idle"]["samples_per_s"]
    for figures in summary.values():
        figures["vs_idle"] = round(figures["samples_per_s"] / idle, 2)
    return summary


# --- phase 2: serving latency while training under contention --------------------------


async def latencies(base: str, pool: TextPool, seconds: float) -> list[float]:
    """One closed-loop client, one text a request, for `seconds`: the latencies (ms)."""
    load = await drive(base, "/predict", one_text_each(pool), 1, seconds)
    if load.errors():
        raise RuntimeError(f"{load.errors()} failed /predict requests")
    return load.latencies_ms()


def serving_phase(trainer: TrainingWorker, case: str, base: str, pool, seconds: float):
    """Latencies of one phase while `case` (a policy, or "no training") trains, and the
    training run's figures."""
    if case not in POLICIES:
        return asyncio.run(latencies(base, pool, seconds)), None
    # The run outlasts the phase; the worker reports its own figures after it.
    figures = trainer.train(
        case, seconds + 2, lambda: {"ms": asyncio.run(latencies(base, pool, seconds))}
    )
    return figures.pop("ms"), figures


def measure_serving(trainer: TrainingWorker, data_dir: Path, args) -> dict:
    """p50/p99 with the busy process on: no training, then each policy training, by rounds."""
    pool = TextPool(load_split(data_dir, "test").texts)
    env = {"LIVETUNE_LABELS_FILE": str(labels_file(data_dir)), "LIVETUNE_TRAINER": "false"}
    env["LIVETUNE_THREADS"] = str(args.serve_threads)
    cases = ("no training", *POLICIES)
    samples: dict[str, list[float]] = {case: [] for case in cases}
    runs: dict[str, list[dict]] = {case: [] for case in POLICIES}
    tmp = tempfile.TemporaryDirectory(prefix="livetune-bench-")
    with tmp, running_server(Path(tmp.name), **env) as server:
        asyncio.run(latencies(server.base, pool, 3.0))  # warm-up
        for round_ in range(args.rounds):
            for case in cases if round_ % 2 == 0 else cases[::-1]:
                wait_for_quiet(args.quiet_wait_s)
                with busy_core():
                    found, run = serving_phase(trainer, case, server.base, pool, args.serve_s)
                samples[case] += found
                if run:
                    runs[case].append(run)
                p50, p99 = percentile(found, 50), percentile(found, 99)
                say(f"serving, {case}: p50 {p50:.1f} ms, p99 {p99:.1f} ms, training {run}")
    return {
        case: {
            "requests": len(ms),
            "p50_ms": rounded(percentile(ms, 50)),
            "p99_ms": rounded(percentile(ms, 99)),
            "training": runs.get(case, []),
        }
        for case, ms in samples.items()
    }


# --- report -----------------------------------------------------------------------------


def cell(figures: dict) -> str:
    """A training cell of the table."""
    return f"{figures['samples_per_s']} ({figures['vs_idle']}x, {figures['clean']})"


def markdown(results: dict) -> str:
    """Both tables and the two verdicts."""
    training, serving = results["training"], results["serving"]
    conditions = list(training["new"])
    rows = [(policy, *(cell(training[policy][c]) for c in conditions)) for policy in POLICIES]
    kept = training["new"]["busy"]["vs_idle"]
    serve_rows = [(case, f["requests"], f["p50_ms"], f["p99_ms"]) for case, f in serving.items()]
    p99 = serving["new"]["p99_ms"] / serving["old"]["p99_ms"]
    return "\n".join([
        f"loadavg before: {results['loadavg_before']}",
        "",
        table(("policy", *(f"{c}: samples/s (x idle, clean cells)" for c in conditions)), rows),
        "",
        f"new policy, busy / idle: {kept}x (target >= {TARGET_KEPT}x): "
        f"{'met' if kept >= TARGET_KEPT else 'MISSED'}",
        "",
        f"serving: LIVETUNE_THREADS={results['serve_threads']} (0 = cores / workers)",
        table(("one core busy, meanwhile", "requests", "p50 ms", "p99 ms"), serve_rows),
        "",
        f"p99 new / old: {p99:.2f}x (target <= {TARGET_P99}x): "
        f"{'met' if p99 <= TARGET_P99 else 'MISSED'}",
    ])  # fmt: skip


def main(argv=None) -> None:
    """Training, then serving, in one training worker; the report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--quick", action="store_true", help="1 round, short phases")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--train-s", type=float, default=30.0, help="seconds a training cell")
    parser.add_argument("--serve-s", type=float, default=20.0, help="seconds a serving phase")
    parser.add_argument(
        "--serve-threads", type=int, default=0, help="the server's LIVETUNE_THREADS (0: default)"
    )
    parser.add_argument(
        "--quiet-wait-s", type=float, default=300.0, help="most a cell waits for a quiet host"
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.data)
    if args.quick:
        args.rounds, args.train_s, args.serve_s, args.quiet_wait_s = 1, 12.0, 8.0, 30.0
    results = {"loadavg_before": Path("/proc/loadavg").read_text().strip(), "cpus": os.cpu_count()}
    say(f"loadavg {results['loadavg_before']}")
    trainer = TrainingWorker(args.data)
    try:
        results["training"] = measure_training(trainer, args)
        results["serving"] = measure_serving(trainer, args.data, args)
    finally:
        trainer.close()
    results.update(quick=args.quick, rounds=args.rounds, train_s=args.train_s)
    results["serve_threads"] = args.serve_threads
    results["loadavg_after"] = Path("/proc/loadavg").read_text().strip()
    write_json(args.out, results)
    print(markdown(results))


if __name__ == "__main__":
    main()
