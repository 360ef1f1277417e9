"""Follow time: from CURRENT changing in S3 to every replica answering with that version.

Two replicas (`bentoml serve`, the default embedded MiniLM, trainer off, one worker each)
share a PostgreSQL store and an S3 bucket and nothing else. Each round this process
changes CURRENT with the S3 registry, as the trainer does when it promotes, then polls
/predict on both replicas until each answers with the new version. Rounds alternate: a
promotion (a new real adapter, random weights of the trainer's LoRA shape, published
untimed, then activated: the replicas download it first) and a rollback to the version
before (already on the replicas' disks). Target: every replica follows within 2 s.

Credentials come from the AWS chain (the environment). The store and the bucket should
be disposable: the replicas write heartbeats and the prediction log into the store, and
the versions published stay in the bucket.

Usage, from the repository root:
    .venv/bin/python -m benchmarks.bench_scaleout --store postgresql://... \\
        --adapters-url s3://bucket/prefix [--s3-endpoint-url URL] [--follow-rounds 8]
"""

from __future__ import annotations

import argparse
import contextlib
import random
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks.harness.adapters import publish_adapter
from benchmarks.harness.data import DEFAULT_DATA, labels_file, read_labels
from benchmarks.harness.report import RESULTS, met, say, table, write_json
from benchmarks.harness.server import running_server, wait_until
from benchmarks.harness.stats import percentile, rounded
from training.model import embedded_model_path
from training.registry.s3 import S3Registry
from training.trainer import TrainConfig

DEFAULT_OUT = RESULTS / "scaleout.json"
TARGET_FOLLOW_S = 2.0
ROUND_TIMEOUT_S = 30.0


def replica_env(args: argparse.Namespace) -> dict[str, str]:
    """What each replica is given: the label set, the shared store and bucket, no trainer."""
    return {
        "LIVETUNE_LABELS_FILE": str(labels_file(args.data)),
        "LIVETUNE_STORE_URL": args.store,
        "LIVETUNE_ADAPTERS_URL": args.adapters_url,
        "LIVETUNE_S3_ENDPOINT_URL": args.s3_endpoint_url or "",
        "LIVETUNE_TRAINER": "false",
    }


def served_version(client: httpx.Client, base: str) -> str:
    """The adapter version the replica at `base` answers /predict with."""
    answer = client.post(f"{base}/predict", json={"texts": ["my card has not arrived"]})
    answer.raise_for_status()
    return answer.json()[0]["adapter"]


def follow(registry: S3Registry, bases: list[str], version: str) -> list[float]:
    """Activate `version`; seconds from CURRENT changing to each replica serving it."""
    waiting = dict.fromkeys(bases)
    with httpx.Client(timeout=10) as client:
        registry.activate(version)  # returns once the PUT of CURRENT has been answered
        changed = time.monotonic()
        while any(seconds is None for seconds in waiting.values()):
            elapsed = time.monotonic() - changed
            if elapsed > ROUND_TIMEOUT_S:
                raise RuntimeError(f"replicas did not follow {version} in {ROUND_TIMEOUT_S} s")
            for base in [b for b, seconds in waiting.items() if seconds is None]:
                if served_version(client, base) == version:
                    waiting[base] = time.monotonic() - changed
            time.sleep(0.01)
    return list(waiting.values())


def swap_seconds(base: str, version: str, replicas: int) -> list[float]:
    """What the workers serving `version` report their swap took (from /status)."""

    def reported():
        workers = httpx.get(f"{base}/status", timeout=10).json()["workers"]
        on = [w for w in workers if w["adapter"] == version and not w["stale"]]
        return len(on) >= replicas and [w["last_swap_s"] for w in on]

    return wait_until(reported, timeout=10)  # a heartbeat follows the swap within a poll


def rounds(registry: S3Registry, bases: list[str], args: argparse.Namespace) -> list[dict]:
    """After a first version (untimed), promotions of fresh ones and rollbacks, in turn."""
    labels = [label.name for label in read_labels(args.data)]
    model = embedded_model_path()
    published = [publish_adapter(registry, model, 0, labels, TrainConfig())]
    follow(registry, bases, published[0])
    timed = []
    for round_ in range(args.follow_rounds):
        if round_ % 2 == 0:
            kind = "promotion"
            published.append(publish_adapter(registry, model, round_ + 1, labels, TrainConfig()))
            version = published[-1]
        else:
            kind, version = "rollback", published[-2]
        time.sleep(random.uniform(0.0, 1.0))  # not in step with the replicas' 0.5 s polls
        seconds = follow(registry, bases, version)
        swaps = swap_seconds(bases[0], version, len(bases))
        timed.append({"kind": kind, "version": version, "replicas_s": seconds, "swap_s": swaps})
        shown = ", ".join(f"{s:.2f}" for s in seconds)
        say(f"{kind} to {version}: followed in {shown} s (swaps {max(swaps):.2f} s at most)")
    return timed


def summary(timed: list[dict]) -> dict:
    """p50 and max, per kind of round and over all, of the slower replica of each round."""
    results: dict = {"rounds": timed}
    for kind in ("promotion", "rollback", "all"):
        slowest = [max(t["replicas_s"]) for t in timed if kind in ("all", t["kind"])]
        swaps = [max(t["swap_s"]) for t in timed if kind in ("all", t["kind"])]
        results[kind] = {
            "rounds": len(slowest),
            "swap_p50_s": rounded(percentile(swaps, 50), 3),
            "p50_s": rounded(percentile(slowest, 50), 3),
            "max_s": rounded(max(slowest, default=None), 3),
        }
    return results


def measure(args: argparse.Namespace) -> dict:
    """Two replicas on the store and the bucket; the timed rounds."""
    env = replica_env(args)
    with tempfile.TemporaryDirectory(prefix="livetune-scaleout-") as tmp:
        folder = Path(tmp)
        registry = S3Registry(
            args.adapters_url, folder / "publisher", endpoint_url=env["LIVETUNE_S3_ENDPOINT_URL"]
        )
        with contextlib.ExitStack() as servers:
            replicas = [servers.enter_context(running_server(folder / n, **env)) for n in "ab"]
            bases = [replica.base for replica in replicas]
            with httpx.Client(timeout=10) as client:  # both up and on the same CURRENT
                wait_until(lambda: len({served_version(client, b) for b in bases}) == 1, 30)
            return summary(rounds(registry, bases, args))


KINDS = {
    "promotion": "promotion (a new version, downloaded first)",
    "rollback": "rollback (a version already on disk)",
    "all": "all rounds",
}


def report(results: dict) -> str:
    """p50 and max of the slower replica, per kind of round, against the target; and the
    p50 of the swap itself (load and switch, as the slower worker reports it)."""
    rows = []
    for kind, what in KINDS.items():
        figures = results[kind]
        ok = figures["max_s"] is not None and figures["max_s"] <= TARGET_FOLLOW_S
        target = f"<= {TARGET_FOLLOW_S:.0f} s: {met(ok)}"
        p50, slowest, swap = (f"{figures[k]:.2f} s" for k in ("p50_s", "max_s", "swap_p50_s"))
        rows.append((f"{what}, {figures['rounds']} rounds", p50, slowest, target, swap))
    header = ("CURRENT changed -> both replicas serve it", "p50", "max", "target", "swap p50")
    return table(header, rows)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The S3 options, shared with bench_feedback (which runs this when they are given)."""
    parser.add_argument(
        "--adapters-url",
        help="s3://bucket/prefix: a disposable bucket (prefix) for the follow-time benchmark",
    )
    parser.add_argument("--s3-endpoint-url", help="S3 endpoint (MinIO, moto...); empty = AWS")
    parser.add_argument(
        "--follow-rounds",
        type=int,
        default=8,
        help="timed activations, alternating promotion and rollback",
    )


def main(argv: list[str] | None = None) -> None:
    """Replicas, rounds, the report."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--store", required=True, help="postgresql://... (a disposable database)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="for its label set")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    add_arguments(parser)
    args = parser.parse_args(argv)
    if not args.adapters_url:
        parser.error("--adapters-url s3://bucket/prefix is required")
    results = measure(args)
    write_json(args.out, results)
    print(report(results))


if __name__ == "__main__":
    main()
