"""Moving a single machine's data to the shared backends, as an operator runs it, and a
trainer killed mid-upload to S3: `python -m training ...` processes on real servers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.harness.server import ROOT, own_env
from tests.factories import tiny_training_env, training_cli, write_toy_csv
from tests.s3 import DUMMY_AWS, new_bucket, raw_client, use_dummy_credentials

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def dummy_aws(monkeypatch):
    use_dummy_credentials(monkeypatch)


def cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    return training_cli({**DUMMY_AWS, **env}, *args)


@pytest.fixture
def single_machine(tmp_path, tiny_model_dir) -> dict:
    """A SQLite store with imported corrections and one promoted adapter, as one host has."""
    env = {**tiny_training_env(tiny_model_dir), "LIVETUNE_DATA_DIR": str(tmp_path / "one")}
    assert cli(env, "import", str(write_toy_csv(tmp_path / "toy.csv"))).returncode == 0
    run = cli(env, "run", "--once")
    assert '"state": "promoted"' in run.stdout, run.stderr[-2000:]
    return env


def exported(env: dict) -> list[dict]:
    result = cli(env, "export", "--all")
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def runs_of(env: dict) -> list[dict]:
    result = cli(env, "runs")
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_migrate_store_keeps_ids_history_and_runs(single_machine, postgres_url):
    before, runs = exported(single_machine), runs_of(single_machine)
    moved = cli(single_machine, "migrate-store", "--to", postgres_url)
    assert moved.returncode == 0, moved.stderr
    assert json.loads(moved.stdout)["copied"]["samples"] == len(before)
    shared = {**single_machine, "LIVETUNE_STORE_URL": postgres_url}
    assert exported(shared) == before
    assert runs_of(shared) == runs
    again = cli(single_machine, "migrate-store", "--to", postgres_url)
    assert again.returncode == 2 and "not empty" in again.stderr  # never merged into


def test_migrate_adapters_copies_every_version_and_current(single_machine, moto_server):
    from training.registry import LocalRegistry
    from training.registry.s3 import S3Registry

    url = f"s3://{new_bucket(moto_server.url)}/livetune"
    env = {**single_machine, "LIVETUNE_S3_ENDPOINT_URL": moto_server.url}
    moved = cli(env, "migrate-adapters", "--to", url)
    assert moved.returncode == 0, moved.stderr
    local = LocalRegistry(Path(single_machine["LIVETUNE_DATA_DIR"]) / "adapters")
    remote = S3Registry(url, cache_dir=Path(env["LIVETUNE_DATA_DIR"]) / "cache", keep=20,
                        endpoint_url=moto_server.url)  # fmt: skip
    assert [v.version for v in remote.versions()] == [v.version for v in local.versions()]
    assert remote.current() == local.current() is not None
    copied, original = remote.materialize(local.current()), local.materialize(local.current())
    for path in original.iterdir():
        if path.name != "manifest.json":
            assert (copied / path.name).read_bytes() == path.read_bytes()
    assert (
        remote.get(local.current()).manifest["metrics"]
        == local.get(local.current()).manifest["metrics"]
    )


# The trainer's S3 uploads hang after the first file: kill -9 lands mid-upload.
DRIVER = """
import sys, time
from pathlib import Path
import training.registry.s3_bucket as s3_bucket
marker, uploads = Path(sys.argv[1]), []
original = s3_bucket.Bucket.put

def put(self, key, body, client=None):
    etag = original(self, key, body, client)
    uploads.append(key)
    if key.startswith("versions/") and len(uploads) == 1:  # keys below the prefix
        marker.write_text(key)
        time.sleep(600)
    return etag

s3_bucket.Bucket.put = put
from training.__main__ import main
sys.exit(main(["run", "--once"]))
"""


def test_a_trainer_killed_mid_upload_leaves_current_whole_and_the_next_run_cleans_up(
    tmp_path, tiny_model_dir, postgres_url, moto_server
):
    bucket = new_bucket(moto_server.url)
    env = {
        **tiny_training_env(tiny_model_dir),
        "LIVETUNE_DATA_DIR": str(tmp_path / "trainer"),
        "LIVETUNE_STORE_URL": postgres_url,
        "LIVETUNE_ADAPTERS_URL": f"s3://{bucket}/livetune",
        "LIVETUNE_S3_ENDPOINT_URL": moto_server.url,
        "LIVETUNE_RUN_LEASE_S": "2",  # the killed trainer's claim on runs lasts this long
    }
    assert cli(env, "import", str(write_toy_csv(tmp_path / "toy.csv"))).returncode == 0
    good = json.loads(cli(env, "run", "--once").stdout)
    assert good["state"] == "promoted", good["reason"]
    marker = tmp_path / "marker"
    # A margin of -1 and no non-inferiority bound promote whatever the candidate scores:
    # this run must reach the upload.
    environment = own_env(
        **DUMMY_AWS, **env, LIVETUNE_PROMOTION_MARGIN="-1", LIVETUNE_GATE_NONINFERIORITY_MARGIN="1"
    )
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(marker)], cwd=ROOT, env=environment,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while not marker.exists():
            assert driver.poll() is None and time.monotonic() < deadline, "never reached upload"
            time.sleep(0.2)
        os.kill(driver.pid, signal.SIGKILL)
    finally:
        driver.kill()
        driver.wait()
    half = marker.read_text().split("/")[1]  # versions/<version>/<file>
    s3 = raw_client(moto_server.url)
    current = s3.get_object(Bucket=bucket, Key="livetune/CURRENT")["Body"].read().decode()
    assert current.strip() == good["candidate"] != half  # CURRENT still names a whole version
    listed = cli(env, "runs").stdout.splitlines()
    assert json.loads(listed[0])["state"] == "running"  # the killed run, as it died
    time.sleep(2.5)  # the killed trainer's lease runs out (tests/test_lease.py)
    after = json.loads(cli(env, "run", "--once").stdout)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert not any(f"/versions/{half}/" in key for key in keys), "the half upload is still there"
    runs = [json.loads(line) for line in cli(env, "runs").stdout.splitlines()]
    killed = next(r for r in runs if r["id"] == json.loads(listed[0])["id"])
    assert killed["state"] == "failed" and "interrupted" in killed["reason"]
    assert after["state"] in ("promoted", "rejected")
