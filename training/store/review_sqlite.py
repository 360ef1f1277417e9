"""The review queue's tables in the SQLite prediction log's file, next to what they rank.

Reads attach the feedback file (and only read it), so a candidate's text is checked against the
corrections in the same statement; writes go through a connection of their own, which
never takes a lock on the feedback file, so a correction never waits on a lease.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from training.store.review import ReviewStore
from training.store.sqlite_schema import PREDICTIONS_SCHEMA, connect, transaction


class SQLiteReviewStore(ReviewStore):
    samples_table = "feedback.samples"
    log_order = "rowid"

    def __init__(self, data_dir: str | Path, *, max_age_s: float):
        super().__init__(max_age_s=max_age_s)
        data_dir = Path(data_dir)
        self._lock = threading.Lock()
        self._db = connect(data_dir / "predictions.sqlite3", "NORMAL", PREDICTIONS_SCHEMA)
        self._read = connect(data_dir / "predictions.sqlite3", "NORMAL", PREDICTIONS_SCHEMA)
        self._read.execute("ATTACH DATABASE ? AS feedback", (str(data_dir / "feedback.sqlite3"),))

    def _rows(self, query, params):
        with self._lock:
            return self._read.execute(query.replace("%s", "?"), params).fetchall()

    def _write(self, work):
        def execute(query, params):
            return db.execute(query.replace("%s", "?"), params).fetchall()

        with self._lock, transaction(self._db) as db:
            return work(execute)

    def _json(self, value):
        return json.dumps(value)

    def close(self) -> None:
        with self._lock:
            self._read.close()
            self._db.close()
