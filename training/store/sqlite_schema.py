"""SQLite connections and schema versions: forward-only migrations, applied at open.

The version lives in the file header (PRAGMA user_version) rather than in a table: it is
written in the same transaction as the migration it records, needs no table of its own
to bootstrap, and every file made before versions were recorded reads 0.
"""

from __future__ import annotations

import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from training.store.base import NewerSchemaError  # noqa: F401  (re-exported, its old home)

BUSY_TIMEOUT_MS = 60_000


@dataclass(frozen=True)
class Schema:
    """One database's migrations: migrations[i] takes a file from version i to i + 1.

    Never edit a released migration; append a new one (add a column, a table, an index,
    copy rows), and never drop data, since an older replica may still be reading it."""

    migrations: tuple[tuple[str, ...], ...]

    @property
    def version(self) -> int:
        return len(self.migrations)


# Version 1 is the schema as it stood before versions were recorded. It stays idempotent
# (IF NOT EXISTS), so an unversioned file made by that code becomes version 1 unchanged.
FEEDBACK_SCHEMA = Schema(
    migrations=(
        (
            """CREATE TABLE IF NOT EXISTS samples (
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
)""",
            "CREATE INDEX IF NOT EXISTS samples_active_key ON samples(text_key)"
            " WHERE superseded_by IS NULL",
            """CREATE TABLE IF NOT EXISTS training_runs (
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
)""",
        ),
        # 2: the label set, changed at run time (training/store/labels.py). `position` is
        # the order labels were added in: the order of the head's rows.
        (
            """CREATE TABLE labels (
    name TEXT PRIMARY KEY,
    position INTEGER NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL CHECK (state IN ('active', 'retired')),
    added_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    retired_at REAL
)""",
            """CREATE TABLE label_set (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
)""",
            "INSERT INTO label_set (id, version) VALUES (1, 0)",
            "CREATE INDEX samples_active_label ON samples(label) WHERE superseded_by IS NULL",
        ),
    )
)
PREDICTIONS_SCHEMA = Schema(
    migrations=(
        (
            """CREATE TABLE IF NOT EXISTS predictions (
    id TEXT PRIMARY KEY,
    text TEXT NOT NULL,
    text_key TEXT NOT NULL,
    label TEXT NOT NULL,
    score REAL NOT NULL,
    adapter TEXT NOT NULL,
    created_at REAL NOT NULL,
    top TEXT NOT NULL DEFAULT '[]'
)""",
            "CREATE INDEX IF NOT EXISTS predictions_created ON predictions(created_at)",
            "CREATE INDEX IF NOT EXISTS predictions_key ON predictions(text_key)",
        ),
        # 2: the review queue (training/store/review.py): each text's scores under the
        # adapter that last re-scored it, and who holds it until when. Keyed by text, as
        # the queue hands out a text once whatever number of times it was served.
        (
            """CREATE TABLE review_scores (
    text_key TEXT PRIMARY KEY,
    adapter TEXT NOT NULL,
    top TEXT NOT NULL,
    margin REAL NOT NULL,
    entropy REAL NOT NULL,
    scored_at REAL NOT NULL
)""",
            """CREATE TABLE review_leases (
    text_key TEXT PRIMARY KEY,
    prediction_id TEXT NOT NULL,
    reviewer TEXT NOT NULL,
    leased_at REAL NOT NULL,
    expires_at REAL NOT NULL
)""",
        ),
    )
)

# Heartbeats are rewritten every few seconds: a file of their own (synchronous=NORMAL),
# so they never queue behind a correction's fsync or the prediction log's writes.
WORKERS_SCHEMA = Schema(
    migrations=(
        (
            """CREATE TABLE IF NOT EXISTS workers (
    worker_id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    last_seen REAL NOT NULL,
    state TEXT NOT NULL DEFAULT '{}'
)""",
        ),
    )
)


def connect(path: Path, synchronous: str, schema: Schema) -> sqlite3.Connection:
    """An autocommit connection in WAL mode, migrated to `schema`; writers take
    `BEGIN IMMEDIATE` explicitly."""
    db = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
    )
    try:
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        wal_mode(db)
        db.execute(f"PRAGMA synchronous = {synchronous}")
        migrate(db, path, schema)
    except BaseException:
        db.close()
        raise
    return db


def wal_mode(db: sqlite3.Connection) -> None:
    """Switch to WAL, retrying while another process holds the file: the switch takes an
    exclusive lock, and SQLite may answer "database is locked" at once instead of waiting
    on busy_timeout (seen when several processes open a new file at the same moment)."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


@contextmanager
def transaction(db: sqlite3.Connection):
    """BEGIN IMMEDIATE takes the write lock up front, so concurrent writers queue on
    busy_timeout instead of failing with "database is locked" at commit."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def schema_version(db: sqlite3.Connection) -> int:
    return db.execute("PRAGMA user_version").fetchone()[0]


def migrate(db: sqlite3.Connection, path: Path, schema: Schema) -> int:
    """Apply the migrations `path` lacks, all in one transaction; returns the version found.

    The write lock is taken before the version is read, so when several processes open a
    file at once one migrates and the others, queued on busy_timeout, find it done."""
    with transaction(db):
        found = schema_version(db)
        if found > schema.version:
            raise NewerSchemaError(
                f"{path} has schema version {found}, but this livetune knows versions up to"
                f" {schema.version}: run a livetune at least as new as the one that wrote it"
                " (an older one must not write to a newer schema)"
            )
        for statements in schema.migrations[found:]:
            for statement in statements:
                db.execute(statement)
        if found < schema.version:
            db.execute(f"PRAGMA user_version = {schema.version}")
    return found
