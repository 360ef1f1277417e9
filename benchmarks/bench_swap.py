"""Hot-swap benchmark: /predict latency under steady load, without and with a swap a second.

One run starts the real `bentoml serve` (embedded MiniLM, the example label set, trainer
off), publishes two adapters, and drives closed-loop clients sending one text per
request. Steady and swapping phases alternate (drift on a shared machine hits both);
during a swapping phase CURRENT flips between the two adapters every second, the way
a promotion does it (--via registry, the default) or through POST /adapters/activate
(--via http). By default each swap also merges the adapter into the weights
(`--unmerged` serves with LoRA per forward instead). Prints p50/p99 of both and the
ratio (target: p99 with swaps <= 1.5x steady, zero errors).

Usage, from the repository root:
    .venv/bin/python -m benchmarks.bench_swap [--phase-s 20 --rounds 3 --clients 4]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from benchmarks.harness.adapters import publish_adapter
from benchmarks.harness.client import Load, drive
from benchmarks.harness.report import RESULTS, table, write_json
from benchmarks.harness.server import ROOT, running_server
from benchmarks.harness.stats import percentile, rounded
from training.labels import load_labels
from training.model import embedded_model_path
from training.registry import LocalRegistry

LABELS_FILE = ROOT / "examples" / "support_labels.txt"
DEFAULT_OUT = RESULTS / "swap.json"
TEXTS = [
    "I lost my card yesterday",
    "what rate do you use for euros?",
    "my transfer was declined again",
    "please refund the order I returned",
    "how do I change my pin",
    "my new card still has not arrived",
]
TARGET_RATIO = 1.5


async def phase(base: str, clients: int, seconds: float, swap: Callable | None = None) -> Load:
    """Closed-loop load for `seconds`; `swap()` runs once a second meanwhile if given."""
    bodies = ({"texts": [text]} for text in itertools.cycle(TEXTS))
    load = asyncio.create_task(drive(base, "/predict", bodies, clients, seconds))
    deadline = time.monotonic() + seconds
    while swap and time.monotonic() < deadline:
        await asyncio.to_thread(swap)  # off the loop, so the clients' timings stay clean
        await asyncio.sleep(1.0)
    return await load


def summary(loads: list[Load]) -> dict:
    """Requests, errors and latency percentiles over every answer of the phases."""
    latencies = [ms for load in loads for ms in load.latencies_ms()]
    return {
        "requests": len(latencies),
        "errors": sum(load.errors() for load in loads),
        "p50_ms": rounded(percentile(latencies, 50)),
        "p99_ms": rounded(percentile(latencies, 99)),
    }


class Swapper:
    """Each call flips CURRENT to the other of two versions; `flips` counts the calls."""

    def __init__(self, base: str, versions: list[str], registry: LocalRegistry, via: str):
        self.base, self.versions, self.registry, self.via = base, versions, registry, via
        self.flips = 0

    def __call__(self) -> None:
        version = self.versions[self.flips % 2]
        if self.via == "http":  # an operator's rollback / roll forward
            body = {"version": version}
            httpx.post(f"{self.base}/adapters/activate", json=body, timeout=30)
        else:  # what the trainer does when it promotes
            self.registry.activate(version)
        self.flips += 1


async def alternate(base: str, swap: Callable, args: argparse.Namespace) -> dict[str, list]:
    """Steady and swapping phases in turn, `args.rounds` of each, after a warm-up."""
    await phase(base, args.clients, 5.0)
    loads: dict[str, list] = {"steady": [], "swapping": []}
    for _ in range(args.rounds):
        loads["steady"].append(await phase(base, args.clients, args.phase_s))
        loads["swapping"].append(await phase(base, args.clients, args.phase_s, swap))
    return loads


def measure(base: str, versions: list[str], registry: LocalRegistry, args) -> dict:
    """Both kinds of phase, then what the workers say they swapped."""
    swap = Swapper(base, versions, registry, args.via)
    loads = asyncio.run(alternate(base, swap, args))
    status = httpx.get(f"{base}/status", timeout=10).json()
    results = {
        "steady": summary(loads["steady"]),
        "swapping": summary(loads["swapping"]),
        "swaps_requested": swap.flips,
        "swaps_done": sum(w["swaps"] for w in status["workers"]),
        "failed_swaps": sum(w["failed_swaps"] for w in status["workers"]),
        "clients": args.clients,
        "via": args.via,
        "merged": not args.unmerged,
    }
    results["p99_ratio"] = round(results["swapping"]["p99_ms"] / results["steady"]["p99_ms"], 2)
    return results


def markdown(results: dict) -> str:
    """Both phases side by side, and the p99 ratio against its target."""
    steady, swapping = results["steady"], results["swapping"]
    ok = results["p99_ratio"] <= TARGET_RATIO and steady["errors"] + swapping["errors"] == 0
    swaps = f"{results['swaps_done']} swaps, {results['failed_swaps']} failed"
    rows = [
        ("steady", *(steady[k] for k in ("requests", "errors", "p50_ms", "p99_ms"))),
        (
            f"a swap every second via {results['via']} ({swaps})",
            *(swapping[k] for k in ("requests", "errors", "p50_ms", "p99_ms")),
        ),
    ]
    verdict = (
        f"p99 with swaps / steady: {results['p99_ratio']}x (target <= {TARGET_RATIO}x, "
        f"zero errors): {'met' if ok else 'MISSED'}"
    )
    return "\n".join(
        [table(("phase", "requests", "errors", "p50 ms", "p99 ms"), rows), "", verdict]
    )


def main(argv=None) -> None:
    """Publish two adapters, serve, measure, report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phase-s", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument(
        "--via",
        choices=("registry", "http"),
        default="registry",
        help="flip CURRENT as a promotion does (registry) or through POST /adapters/activate",
    )
    parser.add_argument(
        "--unmerged",
        action="store_true",
        help="serve with LIVETUNE_MERGE_ADAPTER=false (LoRA run per forward, no merge per swap)",
    )
    args = parser.parse_args(argv)
    labels = [label.name for label in load_labels(LABELS_FILE)]
    with tempfile.TemporaryDirectory() as tmp:
        registry = LocalRegistry(Path(tmp) / "data" / "adapters")
        model = embedded_model_path()
        versions = [publish_adapter(registry, model, seed=s, labels=labels) for s in (1, 2)]
        env = {
            "LIVETUNE_LABELS_FILE": str(LABELS_FILE),
            "LIVETUNE_TRAINER": "false",
            "LIVETUNE_MERGE_ADAPTER": str(not args.unmerged).lower(),
        }
        with running_server(Path(tmp), **env) as server:
            results = measure(server.base, versions, registry, args)
    write_json(args.out, results)
    print(markdown(results))


if __name__ == "__main__":
    main()
