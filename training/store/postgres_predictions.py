"""The PostgreSQL prediction log: a bounded cache of what was served, shared by replicas.

Its inserts commit with synchronous_commit off: a server crash may lose the last few
hundred milliseconds of entries (a correction then cannot cite them), never corrupt the
table, and /predict never waits on the server's WAL flush.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from psycopg.types.json import Jsonb

from training.split import text_key
from training.store.base import PredictionStore
from training.store.postgres_pool import Database, refuse_nul
from training.store.records import PredictionRecord

PRUNE_EVERY_S = 30.0
COLUMNS = "id, text, text_key, label, score, adapter, created_at, top"


class PostgresPredictionLog(PredictionStore):
    """Served predictions by id and by text, pruned by count and age."""

    def __init__(self, db: Database, *, max_count: int, max_age_s: float):
        self.db = db
        self.max_count = max_count
        self.max_age_s = max_age_s
        self._last_prune = 0.0

    def log_predictions(self, records: Sequence[PredictionRecord]) -> None:
        now = time.time()
        for r in records:
            refuse_nul(id=r.id, text=r.text, label=r.label, adapter=r.adapter, top=r.top)
        rows = [
            (r.id, r.text, text_key(r.text), r.label, r.score, r.adapter, r.created_at or now,
             Jsonb(r.top))
            for r in records
        ]  # fmt: skip
        with self.db.transaction() as conn:
            conn.execute("SET LOCAL synchronous_commit = off")
            conn.cursor().executemany(
                f"INSERT INTO predictions ({COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (id) DO UPDATE SET text = excluded.text,"
                " text_key = excluded.text_key, label = excluded.label, score = excluded.score,"
                " adapter = excluded.adapter, created_at = excluded.created_at,"
                " top = excluded.top, seq = DEFAULT",
                rows,
            )
            if now - self._last_prune > PRUNE_EVERY_S:
                self._prune(conn, now)
                self._last_prune = now

    def _prune(self, conn, now: float) -> None:
        conn.execute("DELETE FROM predictions WHERE created_at < %s", (now - self.max_age_s,))
        conn.execute(
            "DELETE FROM predictions WHERE seq <= (SELECT max(seq) FROM predictions) - %s",
            (self.max_count,),
        )

    def prune_predictions(self) -> None:
        """Apply the retention bounds now (logging applies them every PRUNE_EVERY_S)."""
        with self.db.transaction() as conn:
            conn.execute("SET LOCAL synchronous_commit = off")
            self._prune(conn, time.time())

    def get_predictions(self, ids: Sequence[str]) -> dict[str, PredictionRecord]:
        return self._find("id", list(ids))

    def latest_by_text_key(self, keys: Sequence[str]) -> dict[str, PredictionRecord]:
        return self._find("text_key", list(keys))

    def _find(self, column: str, values: list[str]) -> dict[str, PredictionRecord]:
        if not values:
            return {}
        refuse_nul(**{column: values})
        with self.db.connection() as conn:
            rows = conn.execute(
                f"SELECT {column}, id, text, label, score, adapter, created_at, top"
                f" FROM predictions WHERE {column} = ANY(%s) AND created_at >= %s"
                " ORDER BY created_at, seq",
                (values, time.time() - self.max_age_s),
            ).fetchall()
        found: dict[str, PredictionRecord] = {}
        for value, *fields, top in rows:  # later rows win: the latest
            found[value] = PredictionRecord(*fields, top=tuple(tuple(pair) for pair in top))
        return found
