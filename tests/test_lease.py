"""The training run's lease on PostgreSQL, directly and through PgBouncer in transaction
mode: one holder at a time, renewed while held, freed at once when released and after its
expiry when its holder is killed, and a lost lease never confirmed again."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

if not os.environ.get("CI"):  # CI must run these: there a missing psycopg is an error
    pytest.importorskip("psycopg", reason="psycopg is not installed")

import psycopg  # noqa: E402

from training.locks import LeaseLost, TrainingBusy  # noqa: E402
from training.store.postgres import RUN_LEASE, PostgresStore  # noqa: E402
from training.store.postgres_lease import Lease  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
HOLD_RUN_LOCK = """
import sys, time
from training.store.postgres import PostgresStore
with PostgresStore(sys.argv[1], run_lease_s=float(sys.argv[2])).run_lock():
    print("locked", flush=True)
    time.sleep(120)
"""


@pytest.fixture(params=["direct", "pgbouncer"])
def url(request) -> str:
    """A fresh database, reached directly or through PgBouncer in transaction mode."""
    fixture = "postgres_url" if request.param == "direct" else "pooled_url"
    return request.getfixturevalue(fixture)


@pytest.fixture
def open_store(url):
    stores = []

    def open_(**options) -> PostgresStore:
        stores.append(PostgresStore(url, **options))
        return stores[-1]

    yield open_
    for store in stores:
        store.close()


def busy(store: PostgresStore) -> bool:
    try:
        with store.run_lock():
            return False
    except TrainingBusy:
        return True


def test_one_holder_at_a_time_and_free_again_at_once_after(open_store):
    first, second = open_store(), open_store()
    for holder, other in [(first, second), (second, first)] * 3:  # the report: busy when free
        with holder.run_lock():
            assert busy(other)
        assert not busy(other)


def test_a_held_lease_is_renewed_past_its_duration(open_store):
    holder, other = open_store(run_lease_s=1.0), open_store()
    with holder.run_lock() as held:
        time.sleep(2.5)
        assert busy(other)
        held.confirm()  # still ours


def test_a_killed_holder_keeps_the_lease_until_it_expires_then_it_is_free(url, open_store):
    store = open_store()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_RUN_LOCK, url, "3"], cwd=ROOT, stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
    finally:
        holder.kill()  # SIGKILL: no clean-up runs in the holder
        holder.wait()
    killed = time.monotonic()
    assert busy(store)  # a dead holder is not seen at once: its lease runs out first
    while busy(store):
        assert time.monotonic() - killed < 3 + 5, "the dead holder's lease never expired"
        time.sleep(0.1)


def test_a_lease_that_expired_and_was_taken_is_never_confirmed_again(open_store):
    store = open_store()
    stalled = Lease(store.db, RUN_LEASE, ttl_s=1.0)  # held, but never renewed: a stalled host
    assert stalled.acquire()
    time.sleep(1.2)
    with store.run_lock(), pytest.raises(LeaseLost):
        stalled.confirm()
    with pytest.raises(LeaseLost):  # free again, and still not trusted
        stalled.confirm()


def test_no_session_state_is_left_on_pooled_server_connections(url, open_store):
    def settings() -> tuple:
        with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
            locks = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
            keepalive = conn.execute("SHOW tcp_keepalives_idle").fetchone()[0]
            return conn.execute(locks).fetchone()[0], keepalive

    before = settings()
    with open_store().run_lock():
        pass
    assert settings() == before  # the report: the lock and the trainer's SETs stayed behind
