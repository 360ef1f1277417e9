"""SQLite feedback store: WAL mode, one file for corrections and runs, one for the
prediction log (`sqlite_predictions.py`); schema versions in `sqlite_schema.py`.

Corrections use synchronous=FULL so an acknowledged sample survives a crash of any
process (and of the machine). The prediction log is a cache of what was served and
uses synchronous=NORMAL: it never blocks /predict on an fsync.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from training.store import policy
from training.store import queries as q
from training.store.base import ComposedStore
from training.store.copy import COLUMNS
from training.store.labels import LabelWriter
from training.store.queries import SQLReads, SQLSampleWriter, qmark
from training.store.records import (
    AddResult,
    NewSample,
    RunState,
    TrainingRun,
)
from training.store.sqlite_predictions import SQLitePredictionLog
from training.store.sqlite_schema import FEEDBACK_SCHEMA, connect, transaction
from training.store.sqlite_workers import SQLiteWorkers

DUMP_PAGE = 1_000


class SQLiteFeedbackStore(SQLReads, ComposedStore):
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
            self._predictions = SQLitePredictionLog(
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
                SQLSampleWriter(db, qmark, returning=False),
                samples,
                validation_percent=self.validation_percent,
                now=time.time(),
            )

    def _rows(self, query: str, params) -> list[tuple]:
        with self._lock:
            return self._db.execute(qmark(query), params).fetchall()

    @contextmanager
    def _label_transaction(self) -> Iterator[LabelWriter]:
        # BEGIN IMMEDIATE: the write lock, so label changes of every process queue here.
        with self._lock, transaction(self._db) as db:
            yield LabelWriter(db, qmark)

    # Training runs live next to the samples they trained on, in the durable database.
    def start_run(
        self, *, trigger: str, parent: str | None, data_cursor: int, train_samples: int,
        validation_samples: int,
    ) -> int:  # fmt: skip
        with self._lock, transaction(self._db) as db:
            return db.execute(
                qmark(q.START_RUN),
                (trigger, RunState.RUNNING.value, time.time(), parent, data_cursor,
                 train_samples, validation_samples),
            ).lastrowid  # fmt: skip

    def finish_run(self, run_id: int, *, state: RunState | str, reason: str | None,
                   candidate: str | None, report: dict) -> None:  # fmt: skip
        ended = RunState(state).value
        with self._lock, transaction(self._db) as db:
            db.execute(
                qmark(q.FINISH_RUN),
                (ended, reason, candidate, json.dumps(report), time.time(), run_id),
            )

    def runs(self, *, limit: int = 20, states: Sequence[RunState | str] = ()) -> list[TrainingRun]:
        rows = self._rows(*q.runs_query(states, limit))
        return [
            TrainingRun(run_id, trigger, RunState(state), *rest, report=json.loads(report))
            for run_id, trigger, state, *rest, report in rows
        ]

    def fail_interrupted_runs(self, reason: str) -> int:
        with self._lock, transaction(self._db) as db:
            return db.execute(
                qmark(q.FAIL_RUNNING),
                (RunState.FAILED.value, reason, time.time(), RunState.RUNNING.value),
            ).rowcount

    # Dump and restore, for `copy.copy_store`.
    def dump_rows(self, table: str) -> Iterator[tuple]:
        """Every row of `table` in `copy.COLUMNS` order, oldest first, a page at a time."""
        if table == "predictions":
            return self._predictions.dump_rows()
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
            return self._predictions.restore_rows(rows)
        columns = COLUMNS[table]
        marks = ", ".join("?" * len(columns))
        insert = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"
        with self._lock, transaction(self._db) as db:
            return db.executemany(insert, rows).rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()
        self._predictions.close()
        self._workers.close()
