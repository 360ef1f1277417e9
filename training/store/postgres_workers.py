"""Worker heartbeats in PostgreSQL: one row per serving worker of every replica.

last_seen is the server's clock (now()) and `seen_within_s` is compared on the server too:
the replicas' clocks may disagree by seconds, the database's clock is the one they share.
A heartbeat commits with synchronous_commit off: the next one replaces it in seconds.
"""

from __future__ import annotations

from psycopg.types.json import Jsonb

from training.store.base import WorkerStore
from training.store.postgres_pool import Database, refuse_nul
from training.store.records import WorkerRecord

SERVER_NOW = "extract(epoch FROM now())::double precision"


class PostgresWorkers(WorkerStore):
    """The heartbeats of the workers that share this database."""

    def __init__(self, db: Database):
        self.db = db

    def heartbeat(self, worker_id: str, host: str, pid: int, state: dict) -> None:
        refuse_nul(worker_id=worker_id, host=host, state=state)
        with self.db.transaction() as conn:
            conn.execute("SET LOCAL synchronous_commit = off")
            conn.execute(
                "INSERT INTO workers (worker_id, host, pid, last_seen, state)"
                f" VALUES (%s, %s, %s, {SERVER_NOW}, %s) ON CONFLICT (worker_id) DO UPDATE"
                " SET host = excluded.host, pid = excluded.pid,"
                " last_seen = excluded.last_seen, state = excluded.state",
                (worker_id, host, pid, Jsonb(state)),
            )

    def workers(self, *, seen_within_s: float | None = None) -> list[WorkerRecord]:
        where, params = "", ()
        if seen_within_s is not None:
            where, params = f"WHERE last_seen >= {SERVER_NOW} - %s", (seen_within_s,)
        with self.db.connection() as conn:
            rows = conn.execute(
                f"SELECT worker_id, host, pid, last_seen, state FROM workers {where}"
                ' ORDER BY worker_id COLLATE "C"',  # byte order, as on SQLite, whatever the locale
                params,
            ).fetchall()
        return [WorkerRecord(*row) for row in rows]

    def forget_worker(self, worker_id: str) -> None:
        refuse_nul(worker_id=worker_id)
        with self.db.connection() as conn:
            conn.execute("DELETE FROM workers WHERE worker_id = %s", (worker_id,))
