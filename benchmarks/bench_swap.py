"""Hot-swap benchmark: /predict latency under steady load, without and with a swap a second.

One run starts the real `bentoml serve` (embedded MiniLM, the example label set, trainer
off), publishes two adapters, and drives closed-loop clients sending one text per
request. Steady and swapping phases alternate (drift on a shared machine hits both);
during a swapping phase CURRENT flips between the two adapters every second, the way
a promotion does it (--via registry, the default) or through POST /adapters/activate
(--via http). Prints p50/p99 of both and the ratio (target: p99 with swaps <= 1.5x
steady, zero errors).

Usage, from the repository root:
    .venv/bin/python benchmarks/bench_swap.py [--phase-s 20 --rounds 3 --clients 4]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as a script, not only with -m
    sys.path.insert(0, str(REPO_ROOT))

import httpx  # noqa: E402

from tests.factories import publish_adapter  # noqa: E402
from tests.server import start_server, stop_server, wait_for  # noqa: E402
from training.labels import load_labels  # noqa: E402
from training.model import embedded_model_path  # noqa: E402
from training.registry import AdapterRegistry  # noqa: E402

LABELS_FILE = REPO_ROOT / "examples" / "support_labels.txt"
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "swap.json"
TEXTS = [
    "I lost my card yesterday",
    "what rate do you use for euros?",
    "my transfer was declined again",
    "please refund the order I returned",
    "how do I change my pin",
    "my new card still has not arrived",
]
TARGET_RATIO = 1.5


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def drive(base: str, clients: int, seconds: float, swap=None) -> tuple[list[float], int]:
    """Closed-loop load for `seconds`; `swap()` runs once a second meanwhile if given."""
    latencies: list[float] = []
    errors = [0]
    stop = threading.Event()

    def client(offset: int) -> None:
        with httpx.Client(timeout=60) as http:
            i = offset
            while not stop.is_set():
                started = time.perf_counter()
                answer = http.post(f"{base}/predict", json={"texts": [TEXTS[i % len(TEXTS)]]})
                latencies.append(time.perf_counter() - started)
                errors[0] += answer.status_code != 200
                i += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if swap:
            swap()
        time.sleep(1.0)
    stop.set()
    for thread in threads:
        thread.join()
    return latencies, errors[0]


def summary(latencies: list[float], errors: int) -> dict:
    return {
        "requests": len(latencies),
        "errors": errors,
        "p50_ms": round(1e3 * statistics.median(latencies), 1),
        "p99_ms": round(1e3 * percentile(latencies, 0.99), 1),
    }


def main(argv=None) -> None:
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
    args = parser.parse_args(argv)
    labels = [label.name for label in load_labels(LABELS_FILE)]
    with tempfile.TemporaryDirectory() as tmp:
        registry = AdapterRegistry(Path(tmp) / "data" / "adapters")
        model = embedded_model_path()
        versions = [publish_adapter(registry, model, seed=s, labels=labels) for s in (1, 2)]
        process, base = start_server(
            Path(tmp), LIVETUNE_LABELS_FILE=str(LABELS_FILE), LIVETUNE_TRAINER="false"
        )
        try:
            wait_for(f"{base}/readyz", process)
            results = measure(base, versions, registry, args)
        finally:
            stop_server(process)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(markdown(results))


def measure(base: str, versions: list[str], registry: AdapterRegistry, args) -> dict:
    flips = [0]

    def swap() -> None:
        version = versions[flips[0] % 2]
        if args.via == "http":  # an operator's rollback / roll forward
            httpx.post(f"{base}/adapters/activate", json={"version": version}, timeout=30)
        else:  # what the trainer does when it promotes
            registry.activate(version)
        flips[0] += 1

    drive(base, args.clients, 5.0)  # warm-up
    steady, swapping, errors = [], [], {"steady": 0, "swapping": 0}
    for _ in range(args.rounds):
        latencies, failed = drive(base, args.clients, args.phase_s)
        steady += latencies
        errors["steady"] += failed
        latencies, failed = drive(base, args.clients, args.phase_s, swap)
        swapping += latencies
        errors["swapping"] += failed
    status = httpx.get(f"{base}/status", timeout=10).json()
    results = {
        "steady": summary(steady, errors["steady"]),
        "swapping": summary(swapping, errors["swapping"]),
        "swaps_requested": flips[0],
        "swaps_done": sum(w["swaps"] for w in status["workers"]),
        "failed_swaps": sum(w["failed_swaps"] for w in status["workers"]),
        "clients": args.clients,
        "via": args.via,
    }
    results["p99_ratio"] = round(results["swapping"]["p99_ms"] / results["steady"]["p99_ms"], 2)
    return results


def markdown(results: dict) -> str:
    steady, swapping = results["steady"], results["swapping"]
    ok = results["p99_ratio"] <= TARGET_RATIO and steady["errors"] + swapping["errors"] == 0
    return "\n".join(
        [
            "| phase | requests | errors | p50 ms | p99 ms |",
            "|---|---|---|---|---|",
            f"| steady | {steady['requests']} | {steady['errors']} | {steady['p50_ms']} "
            f"| {steady['p99_ms']} |",
            f"| a swap every second via {results['via']} ({results['swaps_done']} swaps, "
            f"{results['failed_swaps']} failed) | {swapping['requests']} | "
            f"{swapping['errors']} | {swapping['p50_ms']} | {swapping['p99_ms']} |",
            "",
            f"p99 with swaps / steady: {results['p99_ratio']}x (target <= {TARGET_RATIO}x, "
            f"zero errors): {'met' if ok else 'MISSED'}",
        ]
    )


if __name__ == "__main__":
    main()
