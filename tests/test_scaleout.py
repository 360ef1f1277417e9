"""More than one machine: two API replicas and a trainer that share only PostgreSQL and S3.

Each replica is its own `bentoml serve` with its own data directory (nothing shared on
disk), the trainer is `python -m training run` in a third, and the only shared state is a
real PostgreSQL server (tests/pg.py) and a real S3 endpoint (moto's server, tests/s3.py).
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from benchmarks.harness.server import (
    ROOT,
    kill_server,
    log_tail,
    own_env,
    running_server,
    server_processes,
    wait_until,
)
from tests.factories import TOY_LABELS, tiny_training_env, toy_samples
from tests.s3 import DUMMY_AWS, new_bucket, use_dummy_credentials

pytestmark = pytest.mark.integration
# A logged error or a traceback; the refusal of a second trainer ("already in progress",
# logged as a warning) is expected.
ERROR_LINE = re.compile(r"^.*(?:\bERROR\b|Traceback|psycopg\.errors).*$", re.MULTILINE)


def shared_env(tiny_model_dir, store_url: str, moto_url: str, bucket: str) -> dict[str, str]:
    """What every replica and the trainer are given: the model, labels and the two URLs."""
    return {
        **tiny_training_env(tiny_model_dir),
        **DUMMY_AWS,
        "LIVETUNE_STORE_URL": store_url,
        "LIVETUNE_ADAPTERS_URL": f"s3://{bucket}/livetune",
        "LIVETUNE_S3_ENDPOINT_URL": moto_url,
        "LIVETUNE_TRAINER": "false",
        "LIVETUNE_WORKER_STALE_S": "5",
    }


def trainer(env: dict, data_dir: Path, *args: str) -> subprocess.Popen:
    """`python -m training run ARGS` as the trainer host runs it, with a cache of its own;
    its log (stderr) goes to `trainer_log(data_dir)`."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(trainer_log(data_dir), "a") as log:  # the child keeps its own copy
        return subprocess.Popen(
            [sys.executable, "-m", "training", "run", *args],
            cwd=ROOT,
            env=own_env(**env, LIVETUNE_DATA_DIR=str(data_dir)),
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )


def trainer_log(data_dir: Path) -> Path:
    return data_dir.parent / f"{data_dir.name}.log"


def served_version(base: str) -> str:
    return httpx.post(f"{base}/predict", json={"texts": ["my card"]}, timeout=10).json()[0][
        "adapter"
    ]


def send(base: str, samples) -> httpx.Response:
    body = {"samples": [{"text": t, "label": y} for t, y in samples]}
    return httpx.post(f"{base}/feedback", json=body, timeout=30)


@pytest.fixture(scope="module", autouse=True)
def dummy_aws():
    """This process reaches moto with the dummy credentials too (to make the buckets)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        use_dummy_credentials(monkeypatch)
        yield


@pytest.fixture(scope="module", params=["direct", "pgbouncer"])
def replicas(request, tmp_path_factory, tiny_model_dir, postgres_server, moto_server):
    """Two replicas (A, B) on one fresh database and one fresh bucket, and their env; the
    database reached directly, then through PgBouncer in transaction mode."""
    if request.param == "direct":
        store_url = postgres_server.fresh_url()
    else:
        store_url = request.getfixturevalue("pgbouncer_server").fresh_url()
    env = shared_env(tiny_model_dir, store_url, moto_server.url, new_bucket(moto_server.url))
    folder = tmp_path_factory.mktemp("scaleout")
    with (
        running_server(folder / "a", **env) as a,
        running_server(folder / "b", **env) as b,
    ):
        yield a, b, env, folder


def test_a_prediction_served_by_one_replica_is_corrected_through_the_other(replicas):
    a, b, _, _ = replicas
    [served] = httpx.post(f"{a.base}/predict", json={"texts": ["i lost my card"]}).json()
    correction = {"prediction_id": served["prediction_id"], "label": "lost_card"}
    response = httpx.post(f"{b.base}/feedback", json={"samples": [correction]}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["stored"] == 1


def test_every_prediction_id_either_replica_served_is_usable_on_the_other(replicas):
    a, b, env, _ = replicas
    with httpx.Client(timeout=30) as client:
        for i in range(30):  # the report: 3 of 26 ids were unknown through the pooler
            served, corrects = (a, b) if i % 2 else (b, a)
            [answer] = client.post(f"{served.base}/predict", json={"texts": [f"id {i}"]}).json()
            correction = {"prediction_id": answer["prediction_id"], "label": TOY_LABELS[i % 3]}
            response = client.post(f"{corrects.base}/feedback", json={"samples": [correction]})
            assert response.status_code == 200, (i, response.text)
    stored = stored_texts(env["LIVETUNE_STORE_URL"])
    assert all(f"id {i}" in stored for i in range(30))


def test_status_on_either_replica_lists_both_replicas_workers(replicas):
    a, b, _, _ = replicas
    own = {server: {p.pid for p in server_processes(server.process)} for server in (a, b)}

    def listed(base: str) -> set[int]:
        workers = httpx.get(f"{base}/status", timeout=10).json()["workers"]
        return {w["pid"] for w in workers if not w["stale"]}

    for replica in (a, b):
        wait_until(lambda r=replica: all(listed(r.base) & pids for pids in own.values()), 30)
        workers = httpx.get(f"{replica.base}/status", timeout=10).json()["workers"]
        assert {"host", "pid", "adapter", "since", "last_seen", "swaps", "stale"} <= set(workers[0])


def test_the_trainer_on_its_own_host_promotes_and_both_replicas_follow(replicas):
    a, b, env, folder = replicas
    samples = toy_samples(240)
    assert send(a.base, samples[:120]).status_code == 200
    assert send(b.base, samples[120:]).status_code == 200
    run = trainer(env, folder / "trainer", "--once")
    out, _ = run.communicate(timeout=600)
    assert run.returncode == 0, log_tail(trainer_log(folder / "trainer"), 60)
    assert '"state": "promoted"' in out, out
    version = httpx.get(f"{a.base}/status", timeout=10).json()["active_adapter"]
    assert version.startswith("v")
    wait_until(lambda: served_version(a.base) == served_version(b.base) == version, timeout=30)
    # Roll back and forward through replica B: both follow within 2 s of CURRENT changing.
    for target in ("base", version):
        answer = httpx.post(f"{b.base}/adapters/activate", json={"version": target}, timeout=30)
        assert answer.status_code == 200, answer.text
        changed = time.monotonic()
        wait_until(lambda t=target: served_version(a.base) == served_version(b.base) == t, 10)
        assert time.monotonic() - changed <= 2.0
    history = httpx.get(f"{a.base}/adapters", timeout=10).json()
    assert [v["version"] for v in history if v["active"]] == [version]


def test_two_trainers_at_once_never_run_together(replicas):
    a, _, env, folder = replicas
    assert send(a.base, toy_samples(60, seed=7)).status_code == 200
    runs = [trainer(env, folder / f"trainer-{i}", "--once") for i in range(2)]
    results = [
        (r.wait(timeout=600), r.stdout.read(), trainer_log(folder / f"trainer-{i}").read_text())
        for i, r in enumerate(runs)
    ]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 3], results  # 3: "a training run is already in progress"
    assert any("already in progress" in err for _, _, err in results)


def test_no_replica_or_trainer_logged_an_error(replicas):
    """Last of the module's tests on `replicas`: what they did left no error behind (the
    report: prepared-statement errors from the follower, heartbeats and the trainer)."""
    a, b, _, folder = replicas
    for log in (a.log, b.log, *folder.glob("trainer*.log")):
        text = log.read_text(errors="replace")
        assert not ERROR_LINE.findall(text), f"{log}:\n{log_tail(log)}"


def stream(base: str, prefix: str, acknowledged: dict, stop: threading.Event, statuses: list):
    """One correction a call until stopped; what was acknowledged, and every status seen."""
    with httpx.Client(timeout=10) as client:
        for i in range(100_000):
            if stop.is_set():
                return
            sample = {"text": f"{prefix} streamed {i}", "label": TOY_LABELS[i % 3]}
            try:
                response = client.post(f"{base}/feedback", json={"samples": [sample]})
            except httpx.TransportError:
                statuses.append("transport")
                time.sleep(0.05)
                continue
            statuses.append(response.status_code)
            if response.status_code == 200:
                acknowledged[sample["text"]] = response.json()["ids"][0]


@contextlib.contextmanager
def streaming(base: str, prefix: str):
    acknowledged, statuses, stop = {}, [], threading.Event()
    thread = threading.Thread(target=stream, args=(base, prefix, acknowledged, stop, statuses))
    thread.start()
    try:
        yield acknowledged, statuses
    finally:
        stop.set()
        thread.join(30)


def stored_texts(store_url: str) -> dict[str, int]:
    from training.store.postgres import PostgresStore

    store = PostgresStore(store_url)
    try:
        return {s.text: s.id for s in store.samples(include_superseded=True)}
    finally:
        store.close()


def test_kill_9_of_a_replica_loses_no_acknowledged_correction(
    tmp_path, tiny_model_dir, postgres_server, moto_server
):
    env = shared_env(
        tiny_model_dir, postgres_server.fresh_url(), moto_server.url, new_bucket(moto_server.url)
    )
    with running_server(tmp_path / "a", **env) as a, running_server(tmp_path / "b", **env) as b:
        with streaming(a.base, "a") as (on_a, _), streaming(b.base, "b") as (on_b, seen_b):
            wait_until(lambda: len(on_a) >= 50 and len(on_b) >= 50, timeout=120)
            kill_server(a.process)  # mid-stream: requests to A are in flight
            served_b = len(on_b)
            wait_until(lambda: len(on_b) >= served_b + 50, timeout=60)
        assert httpx.post(f"{b.base}/predict", json={"texts": ["card"]}).status_code == 200
    stored = stored_texts(env["LIVETUNE_STORE_URL"])
    for text, sample_id in {**on_a, **on_b}.items():
        assert stored.get(text) == sample_id, f"acknowledged {text!r} was lost"
    assert 500 not in seen_b


def test_a_database_outage_is_a_503_and_the_service_recovers_by_itself(
    tmp_path, tiny_model_dir, postgres_server, moto_server
):
    env = shared_env(
        tiny_model_dir, postgres_server.fresh_url(), moto_server.url, new_bucket(moto_server.url)
    )
    with running_server(tmp_path / "a", **env) as a, streaming(a.base, "outage") as (ok, seen):
        wait_until(lambda: len(ok) >= 30, timeout=120)
        postgres_server.stop("immediate")
        try:
            wait_until(lambda: 503 in seen, timeout=60)
            answer = httpx.post(f"{a.base}/predict", json={"texts": ["my card"]}, timeout=30)
            assert answer.status_code == 200  # predictions go on from the adapter in memory
            started = time.monotonic()
            refused = httpx.post(
                f"{a.base}/feedback",
                json={"samples": [{"text": "x", "label": "lost_card"}]},
                timeout=30,
            )
            assert time.monotonic() - started < 15  # a prompt 503, never a hung request
            assert refused.status_code == 503
            assert refused.json()["detail"][0]["type"] == "store_unavailable"
        finally:
            postgres_server.start()
        after = len(ok)
        wait_until(lambda: len(ok) >= after + 30, timeout=120)  # no restart of the service
    assert 500 not in seen
    stored = stored_texts(env["LIVETUNE_STORE_URL"])
    assert all(stored.get(text) == sample_id for text, sample_id in ok.items())


def test_an_object_store_outage_keeps_serving_and_is_shown(
    tmp_path, tiny_model_dir, postgres_server
):
    from tests.s3 import MotoServer

    with MotoServer() as s3:  # its own: stopping it must not take the session's buckets
        env = shared_env(tiny_model_dir, postgres_server.fresh_url(), s3.url, new_bucket(s3.url))
        with running_server(tmp_path / "a", **env) as a:
            s3.stop()
            try:

                def failed_polls() -> int:
                    workers = httpx.get(f"{a.base}/status", timeout=30).json()["workers"]
                    return sum(w["poll_failures"] for w in workers if not w["stale"])

                wait_until(lambda: failed_polls() > 0, timeout=30)
                workers = httpx.get(f"{a.base}/status", timeout=30).json()["workers"]
                assert any(w["last_poll_error"] for w in workers)
                answer = httpx.post(f"{a.base}/predict", json={"texts": ["my card"]}, timeout=30)
                assert answer.status_code == 200  # served from the adapter in memory
                listing = httpx.get(f"{a.base}/adapters", timeout=30)
                assert listing.status_code == 503
                assert listing.json()["detail"][0]["type"] == "registry_unavailable"
                metrics = httpx.get(f"{a.base}/metrics", timeout=30).text
                assert "livetune_adapter_poll_failures_total" in metrics
            finally:
                s3.start()
