"""The store contract on a real PostgreSQL, and what only that backend has: schema
versions in the database, outages of the server, NUL refusal. The run lock: test_lease.py;
the same contract through PgBouncer: test_store_pooler.py."""

from __future__ import annotations

import functools
import os
import threading
import time
from pathlib import Path

import pytest

if not os.environ.get("CI"):  # CI must run these: there a missing psycopg is an error
    pytest.importorskip("psycopg", reason="psycopg is not installed")

import psycopg  # noqa: E402

from tests import pg  # noqa: E402
from tests.store_contract import StoreContract  # noqa: E402
from training.store import (  # noqa: E402
    NewerSchemaError,
    NewSample,
    PredictionRecord,
    StoreUnavailable,
    postgres_schema,  # noqa: E402
)
from training.store.postgres import PostgresStore  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


class TestPostgresStore(StoreContract):
    @pytest.fixture
    def open_store(self, postgres_url):
        return functools.partial(PostgresStore, postgres_url)


@pytest.fixture
def store(postgres_url):
    store = PostgresStore(postgres_url)
    yield store
    store.close()


def query(url: str, statement: str, params=None) -> list[tuple]:
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


# Ids and dedupe under concurrency, from threads sharing one pool.


def test_threads_sharing_a_pool_never_store_a_duplicate_active_answer(store):
    def write(worker: int) -> None:
        for i in range(30):
            store.add_samples([NewSample(f"shared {i % 5}", "ab"[(worker + i) % 2])])

    threads = [threading.Thread(target=write, args=(w,)) for w in range(8)]  # pool max is 4
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(s.text for s in store.samples()) == [f"shared {i}" for i in range(5)]
    history = list(store.samples(include_superseded=True))
    assert all(s.superseded_by is None or s.superseded_by > s.id for s in history)


# NUL characters: PostgreSQL text cannot hold them.


@pytest.mark.parametrize(
    ("sample", "field"),
    [
        (NewSample("my\x00card", "x"), "text"),
        (NewSample("card", "x\x00"), "label"),
        (NewSample("card", "x", client_id="\x00"), "client_id"),
    ],
)
def test_a_nul_is_refused_by_field_and_nothing_of_the_batch_is_stored(store, sample, field):
    with pytest.raises(ValueError, match=f"^{field} contains a NUL"):
        store.add_samples([NewSample("fine", "x"), sample])
    assert store.max_sample_id() == 0


def test_a_nul_in_a_prediction_or_a_heartbeat_is_refused(store):
    with pytest.raises(ValueError, match="^text contains a NUL"):
        store.log_predictions([PredictionRecord("p1", "a\x00", "x", 0.5, "base")])
    with pytest.raises(ValueError, match="^state contains a NUL"):
        store.heartbeat("w:1", "w", 1, {"last_error": ["boom\x00"]})
    assert (store.get_predictions(["p1"]), store.workers()) == ({}, [])


# Schema versions.


def test_a_new_database_gets_every_table_at_the_latest_version(store, postgres_url):
    assert query(postgres_url, "SELECT max(version) FROM schema_version") == [
        (postgres_schema.latest_version(),)
    ]
    tables = query(
        postgres_url, "SELECT tablename FROM pg_tables WHERE schemaname = current_schema"
    )
    expected = {"samples", "training_runs", "predictions", "workers", "schema_version"}
    expected |= {"labels", "label_set"}  # 2
    expected |= {"review_scores", "review_leases"}  # 3
    expected |= {"leases"}  # 4
    assert {name for (name,) in tables} == expected


def test_replicas_starting_at_once_migrate_once(postgres_url):
    stores, errors = [], []

    def start() -> None:
        try:
            stores.append(PostgresStore(postgres_url))
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(stores) == 6
    versions = query(postgres_url, "SELECT version FROM schema_version ORDER BY 1")
    assert versions == [(v,) for v in range(1, postgres_schema.latest_version() + 1)]
    for store in stores:
        store.close()


def test_a_database_from_a_newer_livetune_is_refused_untouched(store, postgres_url):
    store.add_samples([NewSample("kept", "x")])
    query(postgres_url, "INSERT INTO schema_version (version) VALUES (99)")
    with pytest.raises(NewerSchemaError, match="schema version 99") as refused:
        PostgresStore(postgres_url)
    assert "127.0.0.1" in str(refused.value) and pg.PASSWORD not in str(refused.value)
    assert query(postgres_url, "SELECT text FROM samples") == [("kept",)]


def test_a_later_migration_applies_once_and_keeps_the_data(store, postgres_url, monkeypatch):
    store.add_samples([NewSample("kept", "x")])
    # Not idempotent on purpose: a second run of version 2 would fail on CREATE TABLE.
    later = ("CREATE TABLE migrated (pid INTEGER)", "INSERT INTO migrated VALUES (1)")
    monkeypatch.setattr(postgres_schema, "MIGRATIONS", [*postgres_schema.MIGRATIONS, later])
    for _ in range(2):
        PostgresStore(postgres_url).close()
    versions = query(postgres_url, "SELECT version FROM schema_version ORDER BY 1")
    assert versions == [(v,) for v in range(1, len(postgres_schema.MIGRATIONS) + 1)]
    assert query(postgres_url, "SELECT pid FROM migrated") == [(1,)]
    assert [s.text for s in store.samples()] == ["kept"]


def test_a_failing_migration_leaves_the_database_as_it_was(store, postgres_url, monkeypatch):
    broken = ("CREATE TABLE half_done (x INTEGER)", "ALTER TABLE nowhere ADD COLUMN y INTEGER")
    broken_at = list(postgres_schema.MIGRATIONS)
    monkeypatch.setattr(postgres_schema, "MIGRATIONS", [*postgres_schema.MIGRATIONS, broken])
    with pytest.raises(psycopg.errors.UndefinedTable):
        PostgresStore(postgres_url)
    assert query(postgres_url, "SELECT max(version) FROM schema_version") == [(len(broken_at),)]
    assert query(postgres_url, "SELECT to_regclass('half_done')") == [(None,)]


def test_heartbeats_use_the_servers_clock(store, monkeypatch):
    real = time.time()
    monkeypatch.setattr(time, "time", lambda: real - 3600)  # this host's clock is an hour off
    store.heartbeat("w:1", "w", 1, {})
    [worker] = store.workers(seen_within_s=60)
    monkeypatch.undo()
    assert abs(worker.last_seen - time.time()) < 60


# Outages: a cluster of this module's own, so that stopping it disturbs no other test.


@pytest.fixture(scope="module")
def outage_server():
    with pg.cluster() as server:
        yield server


def test_a_stopped_server_is_unavailable_then_recovers_without_reopening(outage_server):
    store = PostgresStore(outage_server.fresh_url(), timeout_s=2)
    store.add_samples([NewSample("before", "x")])
    outage_server.stop("immediate")
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as down:
            store.add_samples([NewSample("during", "x")])
        assert time.monotonic() - started < 10  # a prompt 503, not a hung request
        where = f"PostgreSQL at 127.0.0.1:{outage_server.port}/{pg.DATABASE}"
        assert where in str(down.value) and pg.PASSWORD not in str(down.value)
        with pytest.raises(StoreUnavailable):
            store.count_samples()
    finally:
        outage_server.start()
    store.add_samples([NewSample("after", "x")])
    assert [s.text for s in store.samples()] == ["before", "after"]
    store.close()


def test_an_acknowledged_sample_survives_a_server_crash(outage_server):
    url = outage_server.fresh_url()
    store = PostgresStore(url)
    [sample_id] = store.add_samples([NewSample("acknowledged", "x")]).ids
    outage_server.stop("immediate")  # no shutdown checkpoint: recovery replays the WAL
    outage_server.start()
    assert [(s.id, s.text) for s in store.samples()] == [(sample_id, "acknowledged")]
    store.close()


def test_a_connection_reset_mid_query_is_unavailable_and_the_pool_heals(outage_server):
    url = outage_server.fresh_url()
    store = PostgresStore(url)
    failures = []

    def slow_query() -> None:
        try:
            with store.db.connection() as conn:
                conn.execute("SELECT pg_sleep(30)")
        except StoreUnavailable as exc:
            failures.append(exc)

    thread = threading.Thread(target=slow_query)
    thread.start()
    deadline = time.monotonic() + 10
    while not query(url, "SELECT pid FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%'"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    query(url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
               " WHERE application_name = 'livetune'")  # fmt: skip
    thread.join(10)
    assert len(failures) == 1
    store.add_samples([NewSample("after the reset", "x")])  # a broken connection is replaced
    assert store.count_samples() == 1
    store.close()
