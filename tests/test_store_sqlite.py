"""What only the SQLite backend has: pragmas, schema versions and migrations, on real files."""

from __future__ import annotations

import multiprocessing
import sqlite3
import time
from pathlib import Path

import pytest

from training.split import text_key
from training.store import NewerSchemaError, NewSample, SQLiteFeedbackStore
from training.store.sqlite_schema import (
    BUSY_TIMEOUT_MS,
    FEEDBACK_SCHEMA,
    PREDICTIONS_SCHEMA,
    Schema,
    connect,
    migrate,
    schema_version,
)

# The schema exactly as the code before schema versions created it (user_version 0).
UNVERSIONED_FEEDBACK = """
CREATE TABLE IF NOT EXISTS samples (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    client_id TEXT UNIQUE,
    text TEXT NOT NULL,
    text_key TEXT NOT NULL,
    label TEXT NOT NULL,
    split TEXT NOT NULL CHECK (split IN ('train', 'validation')),
    source TEXT,
    prediction_id TEXT,
    predicted_label TEXT,
    adapter TEXT,
    created_at REAL NOT NULL,
    superseded_by INTEGER REFERENCES samples(id)
);
CREATE INDEX IF NOT EXISTS samples_active_key ON samples(text_key) WHERE superseded_by IS NULL;
CREATE TABLE IF NOT EXISTS training_runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    trigger TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('running', 'promoted', 'rejected', 'failed')),
    reason TEXT,
    started_at REAL NOT NULL,
    finished_at REAL,
    parent TEXT,
    candidate TEXT,
    data_cursor INTEGER NOT NULL,
    train_samples INTEGER NOT NULL,
    validation_samples INTEGER NOT NULL,
    report TEXT NOT NULL DEFAULT '{}'
);
"""
UNVERSIONED_PREDICTIONS = """
CREATE TABLE IF NOT EXISTS predictions (
    id TEXT PRIMARY KEY,
    text TEXT NOT NULL,
    text_key TEXT NOT NULL,
    label TEXT NOT NULL,
    score REAL NOT NULL,
    adapter TEXT NOT NULL,
    created_at REAL NOT NULL,
    top TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS predictions_created ON predictions(created_at);
CREATE INDEX IF NOT EXISTS predictions_key ON predictions(text_key);
"""
# Not idempotent on purpose: a second run of the added version would fail on CREATE TABLE.
WITH_ONE_MORE = Schema(
    FEEDBACK_SCHEMA.migrations
    + (("CREATE TABLE migrated (pid INTEGER)", "INSERT INTO migrated VALUES (1)"),)
)


@pytest.fixture
def store(tmp_path):
    store = SQLiteFeedbackStore(tmp_path)
    yield store
    store.close()


def read(path, query: str) -> list[tuple]:
    db = sqlite3.connect(path)
    try:
        return db.execute(query).fetchall()
    finally:
        db.close()


def test_database_is_in_wal_mode_with_full_sync(store, tmp_path):
    assert read(tmp_path / "feedback.sqlite3", "PRAGMA journal_mode") == [("wal",)]
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_prediction_log_is_in_wal_mode_with_normal_sync(store, tmp_path):
    assert read(tmp_path / "predictions.sqlite3", "PRAGMA journal_mode") == [("wal",)]
    assert store._predictions._db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL


def test_both_connections_wait_on_a_busy_database(store):
    for db in (store._db, store._predictions._db):
        assert db.execute("PRAGMA busy_timeout").fetchone()[0] == BUSY_TIMEOUT_MS == 60_000


def test_new_files_record_the_latest_schema_version(store, tmp_path):
    feedback = read(tmp_path / "feedback.sqlite3", "PRAGMA user_version")
    predictions = read(tmp_path / "predictions.sqlite3", "PRAGMA user_version")
    assert (feedback, predictions) == (
        [(FEEDBACK_SCHEMA.version,)],
        [(PREDICTIONS_SCHEMA.version,)],
    )
    assert FEEDBACK_SCHEMA.version >= 2  # 2: the label set


def make_unversioned_files(data_dir) -> None:
    """Files as the code before schema versions left them, with a little data in each."""
    feedback = sqlite3.connect(data_dir / "feedback.sqlite3")
    feedback.executescript(UNVERSIONED_FEEDBACK)
    feedback.execute(
        "INSERT INTO samples (client_id, text, text_key, label, split, created_at)"
        " VALUES ('c1', 'my card is lost', ?, 'lost_card', 'train', 1.0)",
        (text_key("my card is lost"),),
    )
    feedback.execute(
        "INSERT INTO training_runs (trigger, state, started_at, data_cursor, train_samples,"
        " validation_samples) VALUES ('manual', 'promoted', 1.0, 1, 1, 0)"
    )
    feedback.commit()
    feedback.close()
    predictions = sqlite3.connect(data_dir / "predictions.sqlite3")
    predictions.executescript(UNVERSIONED_PREDICTIONS)
    predictions.execute(
        "INSERT INTO predictions VALUES ('p1', 'hi', ?, 'greet', 0.9, 'base', ?, '[]')",
        (text_key("hi"), time.time()),
    )
    predictions.commit()
    predictions.close()


def schema_of(path) -> list[tuple]:
    return read(path, "SELECT type, name, sql FROM sqlite_master ORDER BY name")


def test_an_unversioned_file_opens_as_version_1_with_its_data(tmp_path):
    make_unversioned_files(tmp_path)
    files = [tmp_path / "feedback.sqlite3", tmp_path / "predictions.sqlite3"]
    schemas = [schema_of(path) for path in files]
    store = SQLiteFeedbackStore(tmp_path)
    # Recognised as version 1 (not rebuilt: every object kept as it was), then migrated.
    latest = [[(FEEDBACK_SCHEMA.version,)], [(PREDICTIONS_SCHEMA.version,)]]
    assert [read(path, "PRAGMA user_version") for path in files] == latest
    for path, before in zip(files, schemas):
        assert set(before) <= set(schema_of(path))
    [sample] = store.samples()
    assert (sample.text, sample.label, sample.client_id) == ("my card is lost", "lost_card", "c1")
    assert store.last_run().state == "promoted"
    assert store.get_predictions(["p1"])["p1"].label == "greet"
    replay = store.add_samples([NewSample("My card is lost", "lost_card", client_id="c1")])
    assert (replay.ids, replay.duplicates) == ([sample.id], 1)
    store.close()


@pytest.mark.parametrize("name", ["feedback.sqlite3", "predictions.sqlite3"])
def test_a_file_from_a_newer_livetune_is_refused_untouched(tmp_path, name):
    SQLiteFeedbackStore(tmp_path).close()
    path = tmp_path / name
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 7")
    db.close()
    before = schema_of(path)
    with pytest.raises(NewerSchemaError) as refused:
        SQLiteFeedbackStore(tmp_path)
    assert str(path) in str(refused.value)
    known = (FEEDBACK_SCHEMA if name == "feedback.sqlite3" else PREDICTIONS_SCHEMA).version
    assert "schema version 7" in str(refused.value) and f"up to {known}" in str(refused.value)
    assert read(path, "PRAGMA user_version") == [(7,)] and schema_of(path) == before


def test_a_later_migration_applies_once_and_keeps_the_data(store, tmp_path):
    [sample_id] = store.add_samples([NewSample("kept", "x")]).ids
    path = tmp_path / "feedback.sqlite3"
    db = connect(path, "FULL", WITH_ONE_MORE)
    assert schema_version(db) == WITH_ONE_MORE.version
    assert migrate(db, path, WITH_ONE_MORE) == WITH_ONE_MORE.version  # nothing to apply
    db.close()
    assert read(path, "SELECT id, text FROM samples") == [(sample_id, "kept")]
    assert read(path, "SELECT count(*) FROM migrated") == [(1,)]


def test_a_failing_migration_leaves_the_file_as_it_was(store, tmp_path):
    path = tmp_path / "feedback.sqlite3"
    broken = Schema(
        FEEDBACK_SCHEMA.migrations
        + (("CREATE TABLE half_done (x)", "INSERT INTO no_such_table VALUES (1)"),)
    )
    with pytest.raises(sqlite3.OperationalError, match="no_such_table"):
        connect(path, "FULL", broken)
    assert read(path, "PRAGMA user_version") == [(FEEDBACK_SCHEMA.version,)]
    assert read(path, "SELECT name FROM sqlite_master WHERE name = 'half_done'") == []


def _open_at_once(path: str, barrier) -> None:
    barrier.wait(60)
    connect(Path(path), "FULL", WITH_ONE_MORE).close()


def test_processes_opening_a_new_file_at_once_migrate_it_once(tmp_path):
    path = tmp_path / "feedback.sqlite3"
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(4)
    openers = [context.Process(target=_open_at_once, args=(str(path), barrier)) for _ in range(4)]
    for process in openers:
        process.start()
    for process in openers:
        process.join(120)
        assert process.exitcode == 0
    assert read(path, "PRAGMA user_version") == [(WITH_ONE_MORE.version,)]
    assert read(path, "SELECT count(*) FROM migrated") == [(1,)]
