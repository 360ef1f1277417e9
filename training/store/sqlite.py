"""SQLite feedback store: WAL mode, one file for corrections and runs, one for the
prediction log (`sqlite_predictions.py`); schema versions in `sqlite_schema.py`.

Corrections use synchronous=FULL so an acknowledged sample survives a crash of any
process (and of the machine). The prediction log is a cache of what was served and
uses synchronous=NORMAL: it never blocks /predict on an fsync.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from training.store import policy
from training.store.base import FeedbackStore
from training.store.copy import COLUMNS
from training.store.records import (
    AddResult,
    NewSample,
    PredictionRecord,
    RunState,
    StoredSample,
    TrainingRun,
    WorkerRecord,
)
from training.store.sqlite_predictions import SQLitePredictionLog
from training.store.sqlite_schema import FEEDBACK_SCHEMA, connect, transaction
from training.store.sqlite_workers import SQLiteWorkers

SAMPLE_COLUMNS = (
    "id, text, label, split, source, client_id, prediction_id, predicted_label, adapter,"
    " created_at, superseded_by"
)
RUN_COLUMNS = (
    "id, trigger, state, reason, started_at, finished_at, parent, candidate, data_cursor,"
    " train_samples, validation_samples, report"
)
DUMP_PAGE = 1_000


def first_value(row: tuple | None):
    return row[0] if row else None


class SQLiteSampleWriter(policy.SampleWriter):
    """The policy's primitives on a connection inside BEGIN IMMEDIATE."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def id_for_client_id(self, client_id: str) -> int | None:
        row = self.db.execute("SELECT id FROM samples WHERE client_id = ?", (client_id,))
        return first_value(row.fetchone())

    def active_id(self, key: str, label: str) -> int | None:
        row = self.db.execute(
            "SELECT id FROM samples WHERE text_key = ? AND superseded_by IS NULL AND label = ?",
            (key, label),
        )
        return first_value(row.fetchone())

    def insert(self, sample: NewSample, *, key: str, split: str, created_at: float) -> int:
        return self.db.execute(
            "INSERT INTO samples (client_id, text, text_key, label, split, source, prediction_id,"
            " predicted_label, adapter, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                sample.client_id,
                sample.text,
                key,
                sample.label,
                split,
                sample.source,
                sample.prediction_id,
                sample.predicted_label,
                sample.adapter,
                created_at,
            ),
        ).lastrowid

    def supersede_others(self, key: str, winner_id: int) -> None:
        self.db.execute(
            "UPDATE samples SET superseded_by = ? WHERE text_key = ? AND superseded_by IS NULL"
            " AND id != ?",
            (winner_id, key, winner_id),
        )


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
        # One connection shared by this process's threads under its lock; the prediction
        # log has its own file, connection and lock, so neither write waits on the other.
        self._lock = threading.Lock()
        self._db = connect(self.data_dir / "feedback.sqlite3", "FULL", FEEDBACK_SCHEMA)
        try:
            self._prediction_log = SQLitePredictionLog(
                self.data_dir / "predictions.sqlite3",
                max_count=prediction_max_count,
                max_age_s=prediction_max_age_s,
            )
            self._workers = SQLiteWorkers(self.data_dir / "workers.sqlite3")
        except BaseException:
            self._db.close()
            raise

    def add_samples(self, samples: Sequence[NewSample]) -> AddResult:
        with self._lock, transaction(self._db) as db:
            return policy.add_samples(
                SQLiteSampleWriter(db),
                samples,
                validation_percent=self.validation_percent,
                now=time.time(),
            )

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
        with self._lock:
            rows = self._db.execute(query + " ORDER BY id", params).fetchall()
        return (StoredSample(*row) for row in rows)

    def count_samples(self, *, after_id: int = 0) -> int:
        with self._lock:
            return self._db.execute(
                "SELECT count(*) FROM samples WHERE id > ? AND superseded_by IS NULL", (after_id,)
            ).fetchone()[0]

    def oldest_sample_time(self, *, after_id: int = 0) -> float | None:
        with self._lock:
            return self._db.execute(
                "SELECT min(created_at) FROM samples WHERE id > ? AND superseded_by IS NULL",
                (after_id,),
            ).fetchone()[0]

    def agreement(self, window: int) -> tuple[int, int]:
        with self._lock:
            agreed, total = self._db.execute(
                "SELECT coalesce(sum(label = predicted_label), 0), count(*) FROM (SELECT label,"
                " predicted_label FROM samples WHERE predicted_label IS NOT NULL"
                " ORDER BY id DESC LIMIT ?)",
                (window,),
            ).fetchone()
        return agreed, total

    def max_sample_id(self) -> int:
        with self._lock:
            return self._db.execute("SELECT coalesce(max(id), 0) FROM samples").fetchone()[0]

    # Training runs live next to the samples they trained on, in the durable database.
    def start_run(
        self, *, trigger: str, parent: str | None, data_cursor: int, train_samples: int,
        validation_samples: int,
    ) -> int:  # fmt: skip
        with self._lock, transaction(self._db) as db:
            return db.execute(
                "INSERT INTO training_runs (trigger, state, started_at, parent, data_cursor,"
                " train_samples, validation_samples) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    trigger,
                    RunState.RUNNING.value,
                    time.time(),
                    parent,
                    data_cursor,
                    train_samples,
                    validation_samples,
                ),
            ).lastrowid

    def finish_run(
        self,
        run_id: int,
        *,
        state: RunState | str,
        reason: str | None,
        candidate: str | None,
        report: dict,
    ) -> None:
        ended = RunState(state).value
        with self._lock, transaction(self._db) as db:
            db.execute(
                "UPDATE training_runs SET state = ?, reason = ?, candidate = ?, report = ?,"
                " finished_at = ? WHERE id = ?",
                (ended, reason, candidate, json.dumps(report), time.time(), run_id),
            )

    def runs(self, *, limit: int = 20, states: Sequence[RunState | str] = ()) -> list[TrainingRun]:
        wanted = [RunState(state).value for state in states]
        where = f"WHERE state IN ({', '.join('?' * len(wanted))})" if wanted else ""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {RUN_COLUMNS} FROM training_runs {where} ORDER BY id DESC LIMIT ?",
                (*wanted, limit),
            ).fetchall()
        return [
            TrainingRun(run_id, trigger, RunState(state), *rest, report=json.loads(report))
            for run_id, trigger, state, *rest, report in rows
        ]

    def fail_interrupted_runs(self, reason: str) -> int:
        with self._lock, transaction(self._db) as db:
            return db.execute(
                "UPDATE training_runs SET state = ?, reason = ?, finished_at = ? WHERE state = ?",
                (RunState.FAILED.value, reason, time.time(), RunState.RUNNING.value),
            ).rowcount

    def log_predictions(self, records: Sequence[PredictionRecord]) -> None:
        self._prediction_log.log_predictions(records)

    def get_predictions(self, ids: Sequence[str]) -> dict[str, PredictionRecord]:
        return self._prediction_log.get_predictions(ids)

    def latest_prediction_for_text(self, texts: Sequence[str]) -> dict[str, PredictionRecord]:
        return self._prediction_log.latest_prediction_for_text(texts)

    def prune_predictions(self) -> None:
        self._prediction_log.prune_predictions()

    def heartbeat(self, worker_id: str, host: str, pid: int, state: dict) -> None:
        self._workers.heartbeat(worker_id, host, pid, state)

    def workers(self, *, seen_within_s: float | None = None) -> list[WorkerRecord]:
        return self._workers.workers(seen_within_s=seen_within_s)

    def forget_worker(self, worker_id: str) -> None:
        self._workers.forget_worker(worker_id)

    # Dump and restore, for `copy.copy_store`.
    def dump_rows(self, table: str) -> Iterator[tuple]:
        """Every row of `table` in `copy.COLUMNS` order, oldest first, a page at a time."""
        if table == "predictions":
            return self._prediction_log.dump_rows()
        return self._dump_pages(f"SELECT {', '.join(COLUMNS[table])} FROM {table}")

    def _dump_pages(self, select: str) -> Iterator[tuple]:
        after = 0
        while True:
            with self._lock:  # per page: other threads may write between pages
                page = self._db.execute(
                    f"{select} WHERE id > ? ORDER BY id LIMIT ?", (after, DUMP_PAGE)
                ).fetchall()
            if not page:
                return
            yield from page
            after = page[-1][0]

    def restore_rows(self, table: str, rows: Iterable[tuple]) -> int:
        """Insert dumped rows, ids and all, in one transaction; meant for an empty table.
        AUTOINCREMENT moves the id sequence past the highest id inserted."""
        if table == "predictions":
            return self._prediction_log.restore_rows(rows)
        columns = COLUMNS[table]
        marks = ", ".join("?" * len(columns))
        insert = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"
        with self._lock, transaction(self._db) as db:
            return db.executemany(insert, rows).rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()
        self._prediction_log.close()
        self._workers.close()
