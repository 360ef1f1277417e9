"""Worker heartbeats in SQLite: one row per serving worker, rewritten as it polls."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from training.store.base import WorkerStore
from training.store.records import WorkerRecord
from training.store.sqlite_schema import WORKERS_SCHEMA, connect, transaction


class SQLiteWorkers(WorkerStore):
    """The heartbeats of the workers that share this data directory."""

    def __init__(self, path: Path):
        self._lock = threading.Lock()
        self._db = connect(path, "NORMAL", WORKERS_SCHEMA)

    def heartbeat(self, worker_id: str, host: str, pid: int, state: dict) -> None:
        with self._lock, transaction(self._db) as db:
            db.execute(
                "INSERT OR REPLACE INTO workers VALUES (?, ?, ?, ?, ?)",
                (worker_id, host, pid, time.time(), json.dumps(state)),
            )

    def workers(self, *, seen_within_s: float | None = None) -> list[WorkerRecord]:
        since = time.time() - seen_within_s if seen_within_s is not None else float("-inf")
        with self._lock:
            rows = self._db.execute(
                "SELECT worker_id, host, pid, last_seen, state FROM workers"
                " WHERE last_seen >= ? ORDER BY worker_id",
                (since,),
            ).fetchall()
        return [WorkerRecord(*row[:4], state=json.loads(row[4])) for row in rows]

    def forget_worker(self, worker_id: str) -> None:
        with self._lock, transaction(self._db) as db:
            db.execute("DELETE FROM workers WHERE worker_id = ?", (worker_id,))

    def close(self) -> None:
        with self._lock:
            self._db.close()
