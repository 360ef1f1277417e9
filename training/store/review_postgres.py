"""The review queue's tables in the PostgreSQL database every replica shares."""

from __future__ import annotations

from psycopg.types.json import Jsonb

from training.store.postgres_pool import Database
from training.store.review import ReviewStore


class PostgresReviewStore(ReviewStore):
    def __init__(self, db: Database, *, max_age_s: float):
        super().__init__(max_age_s=max_age_s)
        self.db = db  # the feedback store's pool: closed with it

    def _rows(self, query, params):
        with self.db.connection() as conn:
            return conn.execute(query, params).fetchall()

    def _write(self, work):
        def execute(query, params):
            cursor = conn.execute(query, params)
            return cursor.fetchall() if cursor.description else []

        with self.db.transaction() as conn:
            return work(execute)

    def _json(self, value):
        return Jsonb(value)

    def close(self) -> None:
        """Nothing of its own to release: the pool is the feedback store's."""
