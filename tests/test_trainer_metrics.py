"""`python -m training run` on a host of its own (the Kubernetes trainer pod) serves its
run metrics, so the alerts on runs see it: every outcome at 0 from the start, then each
finished run counted."""

from __future__ import annotations

import re
import subprocess
import sys

import httpx

from benchmarks.harness.server import ROOT, free_port, own_env, wait_until
from tests.factories import tiny_training_env, training_cli, write_toy_csv
from training.metrics import OUTCOMES

RUNS = re.compile(r'^livetune_training_runs_total\{outcome="(\w+)"\} (\S+)$', re.MULTILINE)


def runs_by_outcome(url: str) -> dict[str, float]:
    try:
        text = httpx.get(url, timeout=2).text
    except httpx.TransportError:
        return {}
    return {outcome: float(value) for outcome, value in RUNS.findall(text)}


def test_the_training_loop_serves_its_runs_from_zero_then_counts_each(tmp_path, tiny_model_dir):
    port = free_port()
    env = {
        **tiny_training_env(tiny_model_dir),
        "LIVETUNE_DATA_DIR": str(tmp_path / "trainer"),
        "LIVETUNE_TRAINER_METRICS_PORT": str(port),
        "LIVETUNE_TRAIN_POLL_S": "0.5",
    }
    loop = subprocess.Popen(
        [sys.executable, "-m", "training", "run"], cwd=ROOT, env=own_env(**env),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        zero = {outcome.value: 0.0 for outcome in OUTCOMES}
        wait_until(lambda: runs_by_outcome(url) == zero, timeout=120)  # before any correction
        assert training_cli(env, "import", str(write_toy_csv(tmp_path / "toy.csv"))).returncode == 0
        wait_until(lambda: sum(runs_by_outcome(url).values()) >= 1, timeout=300)
        counted = runs_by_outcome(url)
        assert counted["promoted"] + counted["rejected"] == 1 and counted["failed"] == 0, counted
    finally:
        loop.terminate()
        loop.wait(timeout=30)
