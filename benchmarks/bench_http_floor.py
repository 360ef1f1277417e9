"""How close /predict can come to the in-process model on this machine: the HTTP floor.

Issue #20 asks the service's best throughput to reach 0.7x the predictor in-process "as
served" (the batch sorted by length, in 16-row forwards). On a box where the server,
its model and the load generator share the cores, every request's CPU outside the
model is taken from the model. This measures that cost on its own, in one run:

1. the predictor in-process as served, at batches of 16 to 128, on the threads one
   worker gets: M texts/s at the best batch (the target's baseline), both cores busy;
2. `benchmarks/floor_service.py`: BentoML's request path with no model (same decorator
   settings, same request and response types as /predict, a fixed answer), 2 workers,
   128 one-text clients: F requests/s, the cores busy with HTTP alone (client included);
3. the real service, 2 workers, the same clients: S texts/s, and the mean batch its
   workers formed (from /metrics), B.

A text then costs the box u_M/M of its CPU in the model and u_F/F in HTTP, where u is
the share of the box's CPU the phase used (measured; 1.0 = every core), so no server on
this request path can pass 1 / (u_M/M + u_F/F) texts/s: the bound, printed as a share
of M next to the 0.7 target and next to S/M. The model runs the batches the service
forms, not the best one: M_B, the in-process figure at the swept batch nearest B, gives
the tighter bound 1 / (u_M/M_B + u_F/F). (A bound, not a forecast: it assumes the model
and the request path overlap perfectly on the cores, with no GIL between them.)

Usage, from the repository root:
    .venv/bin/python -m benchmarks.bench_http_floor --data ../shared/data/banking77
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import re
import statistics
import tempfile
from pathlib import Path

import httpx
import torch

from benchmarks.harness.client import add_load_arguments, drive, one_text_each
from benchmarks.harness.data import DEFAULT_DATA, TextPool, labels_file, load_split, read_labels
from benchmarks.harness.report import say, table
from benchmarks.harness.server import running_server, start_server, stop_server, wait_for
from benchmarks.harness.stats import CpuMeter
from benchmarks.predict_sweeps import build_predictor, sweep_batch_sizes
from service.settings import worker_threads
from training.labels import DEFAULT_TEMPLATE
from training.predictor import forward_rows

TARGET = 0.7
BATCHES = [16, 32, 64, 128]
BATCH_METRIC = "livetune_batch_size_texts"  # service/metrics.py BATCH_SIZE


def in_process(data: Path, rounds: int) -> dict:
    """Step 1, freed before any server starts."""
    torch.set_num_threads(worker_threads(1))
    predictor = build_predictor(read_labels(data), DEFAULT_TEMPLATE, "auto")
    texts = load_split(data, "test").texts
    rows = forward_rows(predictor.device, 0)
    try:
        return sweep_batch_sizes(predictor, texts, BATCHES, (rounds, 2.0), rows)
    finally:
        del predictor
        gc.collect()


def batch_sums(base: str) -> tuple[float, float]:
    """(texts, batches) the service's workers have run so far; (0, 0) where none counted."""
    text = httpx.get(f"{base}/metrics", timeout=10).text
    found = {
        kind: sum(float(v) for v in re.findall(rf"^{BATCH_METRIC}_{kind}\S* (\S+)$", text, re.M))
        for kind in ("sum", "count")
    }
    return found["sum"], found["count"]


def under_load(base: str, process, pool: TextPool, args) -> dict:
    """Median texts/s of `args.rounds` slices at `args.clients` one-text clients, and the
    mean batch the server ran meanwhile (None: it reports none)."""
    asyncio.run(drive(base, "/predict", one_text_each(pool), args.clients, seconds=3))
    before = batch_sums(base)
    rates = []
    with CpuMeter(process) as cpu:
        for _ in range(args.rounds):
            load = asyncio.run(
                drive(base, "/predict", one_text_each(pool), args.clients, seconds=args.seconds)
            )
            assert load.errors() == 0, f"{load.errors()} failed requests"
            rates.append(load.rate())
    texts, batches = (b - a for a, b in zip(before, batch_sums(base), strict=True))
    mean_batch = texts / batches if batches else None
    return {"texts_per_s": statistics.median(rates), "rounds": rates, "mean_batch": mean_batch,
            **cpu.figures}  # fmt: skip


def floor(tmp: Path, pool: TextPool, args) -> dict:
    """Step 2: the model-less service."""
    process, base = start_server(
        tmp, target="benchmarks.floor_service:Floor", FLOOR_WORKERS=str(args.workers)
    )
    try:
        wait_for(f"{base}/readyz", process)
        return under_load(base, process, pool, args)
    finally:
        stop_server(process)


def service(tmp: Path, data: Path, pool: TextPool, args) -> dict:
    """Step 3: the real service on its defaults but the worker count."""
    env = {"LIVETUNE_LABELS_FILE": str(labels_file(data)), "LIVETUNE_WORKERS": str(args.workers)}
    with running_server(tmp, **env) as server:
        return under_load(server.base, server.process, pool, args)


def used(figures: dict) -> float:
    """Share of the box's CPU a phase used: the server's and this process's (the
    in-process model, or the load generator); 1.0 where the meter had no figures."""
    share = figures.get("server_cpu_share", 0) + figures.get("client_cpu_share", 0)
    return min(1.0, share) or 1.0


def cpu(figures: dict) -> str:
    """Who took the CPU during a phase (1.0 = every core)."""
    parts = [("server", "server_cpu_share"), ("client", "client_cpu_share")]
    shown = [f"{name} {figures[key]:.0%}" for name, key in parts if key in figures]
    return ", ".join([*shown, f"others {figures.get('others_cpu_share', 0):.0%}"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    add_load_arguments(parser, seconds=8, rounds=3)
    args = parser.parse_args()
    pool = TextPool(load_split(args.data, "test").texts)

    say("in-process, as served")
    model = in_process(args.data, args.rounds)
    m = model["best_texts_per_s"]
    with tempfile.TemporaryDirectory(prefix="livetune-floor-") as tmp:
        say(f"floor: BentoML's request path, no model, {args.workers} workers")
        http = floor(Path(tmp) / "floor", pool, args)
        say(f"  {http['texts_per_s']:.1f} requests/s")
        say(f"the service, {args.workers} workers")
        served = service(Path(tmp) / "service", args.data, pool, args)
        say(f"  {served['texts_per_s']:.1f} texts/s")
    f, s = http["texts_per_s"], served["texts_per_s"]
    u_m, u_f = used(model), used(http)
    bound = 1 / (u_m / m + u_f / f)
    by_batch = {int(b): r for b, r in model["texts_per_s_by_batch_size"].items()}
    b = min(by_batch, key=lambda size: abs(size - (served["mean_batch"] or 1)))
    tight = 1 / (u_m / by_batch[b] + u_f / f)
    rows = [
        (f"in-process as served, best batch ({model['best_batch_size']})", f"{m:.0f} texts/s",
         "1.00x", cpu(model)),
        (f"floor: BentoML, no model, {args.workers} workers, {args.clients} clients",
         f"{f:.0f} requests/s", f"{f / m:.2f}x", cpu(http)),
        (f"bound: 1 / (u_M/M + u_F/F), u_M {u_m:.2f}, u_F {u_f:.2f}", f"{bound:.0f} texts/s",
         f"**{bound / m:.3f}x**",
         f"target {TARGET}x: {'reachable' if bound / m >= TARGET else 'out of reach'}"),
        (f"in-process as served at batch {b}, nearest the service's mean batch"
         f" ({served['mean_batch'] or 0:.1f}): M_B", f"{by_batch[b]:.0f} texts/s",
         f"{by_batch[b] / m:.2f}x", ""),
        ("bound at the service's batches: 1 / (u_M/M_B + u_F/F)", f"{tight:.0f} texts/s",
         f"**{tight / m:.3f}x**",
         f"target {TARGET}x: {'reachable' if tight / m >= TARGET else 'out of reach'}"),
        (f"the service, {args.workers} workers, {args.clients} clients", f"{s:.0f} texts/s",
         f"**{s / m:.2f}x**", cpu(served)),
    ]  # fmt: skip
    print(table(("figure", "value", "vs in-process as served (M)", "CPU / note"), rows))
    print(f"\nthe service vs the bound at its batches: {s / tight:.2f}x")


if __name__ == "__main__":
    main()
