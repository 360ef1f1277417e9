"""kill -9 of a training run at its worst moments: the registry stays consistent and the
running service keeps serving the last good adapter."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from benchmarks.harness.server import ROOT, running_server
from tests.factories import tiny_training_env, training_cli, write_toy_csv
from training.registry import STAGING_PREFIX, LocalRegistry

pytestmark = pytest.mark.integration

# Runs `python -m training run --once` with one registry step replaced by "say so, then
# hang", so the test can kill -9 the process exactly there. Production code is unchanged.
DRIVER = """
import sys, time
from pathlib import Path
import training.job, training.registry.local
marker, point = Path(sys.argv[1]), sys.argv[2]

def hang(*args, **kwargs):
    marker.write_text(point)
    time.sleep(600)

if point == "training":
    original = training.job.Trainer.train
    def train(self, *args, **kwargs):
        marker.write_text(point)
        return original(self, *args, **kwargs)
    training.job.Trainer.train = train
elif point == "publish":  # staging complete with its manifest, not yet renamed
    original = training.registry.local.write_manifest
    def write_manifest(*args, **kwargs):
        original(*args, **kwargs)
        hang()
    training.registry.local.write_manifest = write_manifest
elif point == "activate":  # the version is published, CURRENT not yet switched
    training.registry.local.LocalRegistry._write_current = hang
from training.__main__ import main
sys.exit(main(["run", "--once"]))
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_model_dir):
    tmp_path = tmp_path_factory.mktemp("crash")
    env = {**tiny_training_env(tiny_model_dir), "LIVETUNE_DATA_DIR": str(tmp_path / "data")}
    csv = write_toy_csv(tmp_path / "toy.csv")
    assert cli(env, "import", str(csv)).returncode == 0
    good = json.loads(cli(env, "run", "--once").stdout)
    assert good["state"] == "promoted", good["reason"]
    server_env = {k: v for k, v in env.items() if k != "LIVETUNE_DATA_DIR"}
    with running_server(tmp_path, LIVETUNE_TRAINER="false", **server_env) as server:
        yield env, server.base, good["candidate"], server.data_dir / "adapters"


def cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    return training_cli(env, *args, timeout=300)


def served_adapter(base: str) -> str:
    return httpx.post(f"{base}/predict", json={"texts": ["lost card"]}, timeout=30).json()[0][
        "adapter"
    ]


@pytest.mark.parametrize("point", ["training", "publish", "activate"])
def test_kill_9_leaves_the_registry_consistent_and_the_service_on_the_last_good(setup, point):
    env, base, _, adapters = setup
    good = LocalRegistry(adapters).current()  # the last good one, from setup or a prior case
    wait_for_adapter(base, good)
    marker = adapters.parent.parent / f"reached-{point}"
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(marker), point],
        cwd=ROOT,
        # Margin -1, no non-inferiority bound and a vanishing alpha: the candidate is
        # always promoted, so the run reaches the registry.
        env={
            **os.environ,
            **env,
            "LIVETUNE_PROMOTION_MARGIN": "-1",
            "LIVETUNE_GATE_NONINFERIORITY_MARGIN": "1",
            "LIVETUNE_GATE_ALPHA": "1e-12",
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300  # a hang guard: a loaded CI machine is slow
    while not marker.exists():
        assert driver.poll() is None, "the run ended before reaching the kill point"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.5 if point == "training" else 0.1)
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=30)

    registry = LocalRegistry(adapters)
    assert registry.current() == good
    assert all(registry.get(v.version) for v in registry.versions())  # every version whole
    time.sleep(1.5)  # longer than a swap poll: nothing may have moved the workers
    assert served_adapter(base) == good
    # The next run takes over the dead one's lock, marks it failed, clears its debris.
    after = json.loads(cli(env, "run", "--once").stdout)
    assert after["state"] in ("promoted", "rejected"), after["reason"]
    assert not [p for p in adapters.iterdir() if p.name.startswith(STAGING_PREFIX)]
    runs = [json.loads(line) for line in cli(env, "runs").stdout.splitlines()]
    assert runs[1]["state"] == "failed" and "interrupted" in runs[1]["reason"]


def wait_for_adapter(base: str, version: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while served_adapter(base) != version:
        assert time.monotonic() < deadline, f"the service never served {version}"
        time.sleep(0.2)


def test_nothing_half_written_was_ever_published(setup):
    _, _, _, adapters = setup
    for folder in Path(adapters).iterdir():
        if folder.is_dir() and not folder.name.startswith(STAGING_PREFIX):
            assert (folder / "manifest.json").is_file()
