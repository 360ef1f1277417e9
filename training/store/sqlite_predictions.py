"""The SQLite prediction log: a bounded cache of what was served, in its own file.

synchronous=NORMAL: losing the last few entries to a power cut only means a correction
cannot cite them, and /predict never waits on an fsync.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from training.split import text_key
from training.store.base import PredictionStore
from training.store.copy import COLUMNS
from training.store.records import PredictionRecord
from training.store.sqlite_schema import PREDICTIONS_SCHEMA, connect, transaction

PRUNE_EVERY_S = 30.0
DUMP_PAGE = 1_000


class SQLitePredictionLog(PredictionStore):
    """Served predictions by id and by text, pruned by count and age."""

    def __init__(self, path: Path, *, max_count: int, max_age_s: float):
        self.max_count = max_count
        self.max_age_s = max_age_s
        # One connection shared by this process's threads under a lock of its own, so
        # logging a prediction never waits on a correction being written (or the reverse).
        self._lock = threading.Lock()
        self._db = connect(path, "NORMAL", PREDICTIONS_SCHEMA)
        self._last_prune = 0.0

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
        with self._lock, transaction(self._db) as db:
            db.executemany(
                "INSERT OR REPLACE INTO predictions VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows
            )
            if now - self._last_prune > PRUNE_EVERY_S:
                self._prune(db, now)
                self._last_prune = now

    def _prune(self, db: sqlite3.Connection, now: float) -> None:
        db.execute("DELETE FROM predictions WHERE created_at < ?", (now - self.max_age_s,))
        db.execute(
            "DELETE FROM predictions WHERE rowid <= (SELECT max(rowid) FROM predictions) - ?",
            (self.max_count,),
        )

    def prune_predictions(self) -> None:
        """Apply the retention bounds now (logging applies them every PRUNE_EVERY_S)."""
        with self._lock, transaction(self._db) as db:
            self._prune(db, time.time())

    def get_predictions(self, ids: Sequence[str]) -> dict[str, PredictionRecord]:
        return self._find("id", list(ids))

    def latest_by_text_key(self, keys: Sequence[str]) -> dict[str, PredictionRecord]:
        return self._find("text_key", list(keys))

    def _find(self, column: str, values: list[str]) -> dict[str, PredictionRecord]:
        cutoff = time.time() - self.max_age_s
        found: dict[str, PredictionRecord] = {}
        with self._lock:
            for start in range(0, len(values), 500):  # SQLite caps bound parameters
                chunk = values[start : start + 500]
                rows = self._db.execute(
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

    def dump_rows(self) -> Iterator[tuple]:
        """Every entry in `copy.COLUMNS` order, oldest logged first, a page at a time."""
        select = f"SELECT rowid, {', '.join(COLUMNS['predictions'])} FROM predictions"
        after = 0
        while True:
            with self._lock:
                page = self._db.execute(
                    f"{select} WHERE rowid > ? ORDER BY rowid LIMIT ?", (after, DUMP_PAGE)
                ).fetchall()
            if not page:
                return
            yield from (row[1:] for row in page)
            after = page[-1][0]

    def restore_rows(self, rows: Iterable[tuple]) -> int:
        """Append dumped entries in their order, in one transaction."""
        columns = COLUMNS["predictions"]
        marks = ", ".join("?" * len(columns))
        insert = f"INSERT INTO predictions ({', '.join(columns)}) VALUES ({marks})"
        with self._lock, transaction(self._db) as db:
            return db.executemany(insert, rows).rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()
