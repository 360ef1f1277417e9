"""What per-request switches cost at peak load: the served throughput with each one on,
against the defaults, in one run.

A py-spy profile of a worker at 128 one-text clients (`py-spy record --gil`) showed the
model thread holding the GIL in under 10% of the samples and the request path in the
rest: BentoML's OpenTelemetry middleware (a span per request, exported or not), its access
log, its Prometheus middleware, JSON. This measures the two a user can switch:
LIVETUNE_TRACING (off by default) and LIVETUNE_ACCESS_LOG (on by default).

Each configuration is a real `bentoml serve` (2 workers, the Banking77 labels, zero-shot),
driven by 128 closed-loop clients posting one text each; configurations are measured
round-robin (--rounds) and summarised by their median, as ratios to the defaults, because
the machine is shared and absolute rates drift.

Usage, from the repository root:
    .venv/bin/python -m benchmarks.bench_hot_path --data ../shared/data/banking77
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from pathlib import Path

from benchmarks.harness.client import add_load_arguments, drive, one_text_each
from benchmarks.harness.data import DEFAULT_DATA, TextPool, labels_file, load_split
from benchmarks.harness.report import ratio, say, table
from benchmarks.harness.server import start_server, stop_server, wait_for

CONFIGS = {
    "defaults (tracing off, access log on)": {},
    "tracing on": {"LIVETUNE_TRACING": "true"},
    "access log off": {"LIVETUNE_ACCESS_LOG": "false"},
}


def served_rate(tmp: Path, env: dict, pool: TextPool, args) -> float:
    """Texts/s of one fresh server under `args.clients` one-text clients."""
    process, base = start_server(tmp, LIVETUNE_WORKERS=str(args.workers), **env)
    try:
        wait_for(f"{base}/readyz", process)
        asyncio.run(drive(base, "/predict", one_text_each(pool), args.clients, seconds=8))
        load = asyncio.run(
            drive(base, "/predict", one_text_each(pool), args.clients, seconds=args.seconds)
        )
        assert load.errors() == 0, f"{load.errors()} failed requests"
        return load.rate()
    finally:
        stop_server(process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    add_load_arguments(parser, seconds=20, rounds=2)
    args = parser.parse_args()
    pool = TextPool(load_split(args.data, "test").texts)
    labels = {"LIVETUNE_LABELS_FILE": str(labels_file(args.data))}
    rates: dict[str, list[float]] = {name: [] for name in CONFIGS}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for i, (name, env) in enumerate(CONFIGS.items()):
                rate = served_rate(Path(tmp) / f"{round_}-{i}", {**labels, **env}, pool, args)
                rates[name].append(rate)
                say(f"round {round_}: {name}: {rate:.1f} texts/s")
    medians = {name: statistics.median(values) for name, values in rates.items()}
    baseline = medians[next(iter(CONFIGS))]
    rows = [
        (name, f"{median:.1f}", ratio(median, baseline), ", ".join(f"{r:.1f}" for r in rates[name]))
        for name, median in medians.items()
    ]
    print(table(("configuration", "texts/s (median)", "vs defaults", "each round"), rows))


if __name__ == "__main__":
    main()
