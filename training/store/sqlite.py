"""SQLite feedback store: WAL mode, one file for corrections, one for the prediction log.

Corrections use synchronous=FULL so an acknowledged sample survives a crash of any
process (and of the machine). The prediction log is a cache of what was served and
uses synchronous=NORMAL: it never blocks /predict on an fsync.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from training.split import split_for, text_key
from training.store.base import (
    AddResult,
    FeedbackStore,
    NewSample,
    PredictionRecord,
    StoredSample,
    TrainingRun,
)

BUSY_TIMEOUT_MS = 60_000
PRUNE_EVERY_S = 30.0

SAMPLES_SCHEMA = """
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
RUN_COLUMNS = (
    "id, trigger, state, reason, started_at, finished_at, parent, candidate, data_cursor,"
    " train_samples, validation_samples, report"
)
PREDICTIONS_SCHEMA = """
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
SAMPLE_COLUMNS = (
    "id, text, label, split, source, client_id, prediction_id, predicted_label, adapter,"
    " created_at, superseded_by"
)


def connect(path: Path, synchronous: str, schema: str) -> sqlite3.Connection:
    """An autocommit connection in WAL mode; writers take `BEGIN IMMEDIATE` explicitly."""
    db = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
    )
    db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    db.execute("PRAGMA journal_mode = WAL")
    db.execute(f"PRAGMA synchronous = {synchronous}")
    with transaction(db):
        for statement in filter(str.strip, schema.split(";")):
            db.execute(statement)
    return db


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


class SQLiteFeedbackStore(FeedbackStore):
    """The embedded default store, safe for several worker processes at once."""

    def __init__(
        self,
        data_dir: str | Path,
        *,
        validation_percent: float = 20.0,
        prediction_max_count: int = 1_000_000,
        prediction_max_age_s: float = 7 * 24 * 3600,
    ):
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.validation_percent = validation_percent
        self.prediction_max_count = prediction_max_count
        self.prediction_max_age_s = prediction_max_age_s
        # A connection per database, each shared by this process's threads under its own
        # lock, so the prediction-log writer never holds up a correction (or the reverse).
        self._samples_lock = threading.Lock()
        self._predictions_lock = threading.Lock()
        self._samples = connect(self.data_dir / "feedback.sqlite3", "FULL", SAMPLES_SCHEMA)
        self._predictions = connect(
            self.data_dir / "predictions.sqlite3", "NORMAL", PREDICTIONS_SCHEMA
        )
        self._last_prune = 0.0

    def add_samples(self, samples: Sequence[NewSample]) -> AddResult:
        ids, new, now = [], [], time.time()
        with self._samples_lock, transaction(self._samples) as db:
            for sample in samples:
                key = text_key(sample.text)
                existing = self._existing(db, sample, key)
                new.append(existing is None)
                ids.append(existing if existing is not None else self._insert(db, sample, key, now))
        return AddResult(ids=ids, new=new)

    def _existing(self, db: sqlite3.Connection, sample: NewSample, key: str) -> int | None:
        """The id already stored for a replayed client id or an identical active sample."""
        if sample.client_id is not None:
            row = db.execute(
                "SELECT id FROM samples WHERE client_id = ?", (sample.client_id,)
            ).fetchone()
            if row:
                return row[0]
        row = db.execute(
            "SELECT id FROM samples WHERE text_key = ? AND superseded_by IS NULL AND label = ?",
            (key, sample.label),
        ).fetchone()
        return row[0] if row else None

    def _insert(self, db: sqlite3.Connection, sample: NewSample, key: str, now: float) -> int:
        cursor = db.execute(
            "INSERT INTO samples (client_id, text, text_key, label, split, source, prediction_id,"
            " predicted_label, adapter, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                sample.client_id,
                sample.text,
                key,
                sample.label,
                split_for(key, self.validation_percent),
                sample.source,
                sample.prediction_id,
                sample.predicted_label,
                sample.adapter,
                now,
            ),
        )
        new_id = cursor.lastrowid
        # Same text, new label: the older answer stays as history, the new one wins.
        db.execute(
            "UPDATE samples SET superseded_by = ? WHERE text_key = ? AND superseded_by IS NULL"
            " AND id != ?",
            (new_id, key, new_id),
        )
        return new_id

    def samples(
        self, *, split: str | None = None, after_id: int = 0, include_superseded: bool = False
    ) -> Iterator[StoredSample]:
        query = f"SELECT {SAMPLE_COLUMNS} FROM samples WHERE id > ?"
        params: list = [after_id]
        if not include_superseded:
            query += " AND superseded_by IS NULL"
        if split is not None:
            query += " AND split = ?"
            params.append(split)
        with self._samples_lock:
            rows = self._samples.execute(query + " ORDER BY id", params).fetchall()
        return (StoredSample(*row) for row in rows)

    def count_samples(self, *, after_id: int = 0) -> int:
        with self._samples_lock:
            return self._samples.execute(
                "SELECT count(*) FROM samples WHERE id > ? AND superseded_by IS NULL", (after_id,)
            ).fetchone()[0]

    def oldest_sample_time(self, *, after_id: int = 0) -> float | None:
        with self._samples_lock:
            return self._samples.execute(
                "SELECT min(created_at) FROM samples WHERE id > ? AND superseded_by IS NULL",
                (after_id,),
            ).fetchone()[0]

    def agreement(self, window: int) -> tuple[int, int]:
        with self._samples_lock:
            agreed, total = self._samples.execute(
                "SELECT coalesce(sum(label = predicted_label), 0), count(*) FROM (SELECT label,"
                " predicted_label FROM samples WHERE predicted_label IS NOT NULL"
                " ORDER BY id DESC LIMIT ?)",
                (window,),
            ).fetchone()
        return agreed, total

    def max_sample_id(self) -> int:
        with self._samples_lock:
            return self._samples.execute("SELECT coalesce(max(id), 0) FROM samples").fetchone()[0]

    # Training runs live next to the samples they trained on, in the durable database.
    def start_run(
        self, *, trigger: str, parent: str | None, data_cursor: int, train_samples: int,
        validation_samples: int,
    ) -> int:  # fmt: skip
        with self._samples_lock, transaction(self._samples) as db:
            return db.execute(
                "INSERT INTO training_runs (trigger, state, started_at, parent, data_cursor,"
                " train_samples, validation_samples) VALUES (?, 'running', ?, ?, ?, ?, ?)",
                (trigger, time.time(), parent, data_cursor, train_samples, validation_samples),
            ).lastrowid

    def finish_run(
        self, run_id: int, *, state: str, reason: str | None, candidate: str | None, report: dict
    ) -> None:
        with self._samples_lock, transaction(self._samples) as db:
            db.execute(
                "UPDATE training_runs SET state = ?, reason = ?, candidate = ?, report = ?,"
                " finished_at = ? WHERE id = ?",
                (state, reason, candidate, json.dumps(report), time.time(), run_id),
            )

    def runs(self, *, limit: int = 20, states: Sequence[str] = ()) -> list[TrainingRun]:
        where = f"WHERE state IN ({', '.join('?' * len(states))})" if states else ""
        with self._samples_lock:
            rows = self._samples.execute(
                f"SELECT {RUN_COLUMNS} FROM training_runs {where} ORDER BY id DESC LIMIT ?",
                (*states, limit),
            ).fetchall()
        return [TrainingRun(*row[:-1], report=json.loads(row[-1])) for row in rows]

    def fail_interrupted_runs(self, reason: str) -> int:
        with self._samples_lock, transaction(self._samples) as db:
            return db.execute(
                "UPDATE training_runs SET state = 'failed', reason = ?, finished_at = ?"
                " WHERE state = 'running'",
                (reason, time.time()),
            ).rowcount

    def log_predictions(self, records: Sequence[PredictionRecord]) -> None:
        now = time.time()
        rows = [
            (
                r.id,
                r.text,
                text_key(r.text),
                r.label,
                r.score,
                r.adapter,
                r.created_at or now,
                json.dumps(r.top),
            )
            for r in records
        ]
        with self._predictions_lock, transaction(self._predictions) as db:
            db.executemany(
                "INSERT OR REPLACE INTO predictions VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows
            )
            if now - self._last_prune > PRUNE_EVERY_S:
                self._prune(db, now)
                self._last_prune = now

    def _prune(self, db: sqlite3.Connection, now: float) -> None:
        db.execute(
            "DELETE FROM predictions WHERE created_at < ?", (now - self.prediction_max_age_s,)
        )
        db.execute(
            "DELETE FROM predictions WHERE rowid <= (SELECT max(rowid) FROM predictions) - ?",
            (self.prediction_max_count,),
        )

    def prune_predictions(self) -> None:
        """Apply the retention bounds now (they are otherwise applied every 30 s of logging)."""
        with self._predictions_lock, transaction(self._predictions) as db:
            self._prune(db, time.time())

    def get_predictions(self, ids: Sequence[str]) -> dict[str, PredictionRecord]:
        return self._find_predictions("id", list(ids))

    def latest_prediction_for_text(self, texts: Sequence[str]) -> dict[str, PredictionRecord]:
        keys = {text_key(text): text for text in texts}
        found = self._find_predictions("text_key", list(keys))
        return {keys[key]: record for key, record in found.items()}

    def _find_predictions(self, column: str, values: list[str]) -> dict[str, PredictionRecord]:
        cutoff = time.time() - self.prediction_max_age_s
        found: dict[str, PredictionRecord] = {}
        with self._predictions_lock:
            for start in range(0, len(values), 500):  # SQLite caps bound parameters
                chunk = values[start : start + 500]
                rows = self._predictions.execute(
                    f"SELECT {column}, id, text, label, score, adapter, created_at, top"
                    " FROM predictions"
                    f" WHERE {column} IN ({','.join('?' * len(chunk))}) AND created_at >= ?"
                    " ORDER BY created_at",
                    [*chunk, cutoff],
                ).fetchall()
                for value, *fields, top in rows:  # later rows win: the latest
                    pairs = tuple((label, score) for label, score in json.loads(top))
                    found[value] = PredictionRecord(*fields, top=pairs)
        return found

    def close(self) -> None:
        with self._samples_lock, self._predictions_lock:
            self._samples.close()
            self._predictions.close()
