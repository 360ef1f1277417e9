"""PostgreSQL feedback store, for several API replicas and a trainer on other hosts.

Same semantics as the SQLite store (the contract suite runs on both). Connections come
from a small pool per process (`postgres_pool.py`); the prediction log and the heartbeats
live in `postgres_predictions.py` and `postgres_workers.py`, the schema in
`postgres_schema.py`. Only this package's PostgreSQL modules import psycopg, and nothing
imports them unless a PostgreSQL URL is configured.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict

from psycopg.types.json import Jsonb

from training.locks import TrainingBusy
from training.store import policy, postgres_rows
from training.store.base import FeedbackStore
from training.store.postgres_pool import Database, refuse_nul
from training.store.postgres_predictions import PostgresPredictionLog
from training.store.postgres_schema import RUN_LOCK, SAMPLES_LOCK
from training.store.postgres_workers import PostgresWorkers
from training.store.records import (
    AddResult,
    NewSample,
    PredictionRecord,
    RunState,
    StoredSample,
    TrainingRun,
    WorkerRecord,
)

SAMPLE_COLUMNS = (
    "id, text, label, split, source, client_id, prediction_id, predicted_label, adapter,"
    " created_at, superseded_by"
)
RUN_COLUMNS = (
    "id, trigger, state, reason, started_at, finished_at, parent, candidate, data_cursor,"
    " train_samples, validation_samples, report"
)


def first_value(row: tuple | None):
    return row[0] if row else None


class PostgresSampleWriter(policy.SampleWriter):
    """The policy's primitives on a connection inside the samples transaction."""

    def __init__(self, conn):
        self.conn = conn

    def id_for_client_id(self, client_id: str) -> int | None:
        row = self.conn.execute("SELECT id FROM samples WHERE client_id = %s", (client_id,))
        return first_value(row.fetchone())

    def active_id(self, key: str, label: str) -> int | None:
        row = self.conn.execute(
            "SELECT id FROM samples WHERE text_key = %s AND superseded_by IS NULL AND label = %s",
            (key, label),
        )
        return first_value(row.fetchone())

    def insert(self, sample: NewSample, *, key: str, split: str, created_at: float) -> int:
        return self.conn.execute(
            "INSERT INTO samples (client_id, text, text_key, label, split, source, prediction_id,"
            " predicted_label, adapter, created_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (sample.client_id, sample.text, key, sample.label, split, sample.source,
             sample.prediction_id, sample.predicted_label, sample.adapter, created_at),
        ).fetchone()[0]  # fmt: skip

    def supersede_others(self, key: str, winner_id: int) -> None:
        self.conn.execute(
            "UPDATE samples SET superseded_by = %s WHERE text_key = %s"
            " AND superseded_by IS NULL AND id != %s",
            (winner_id, key, winner_id),
        )


class PostgresStore(FeedbackStore):
    """Corrections, runs, the prediction log and heartbeats in one PostgreSQL database."""

    def __init__(
        self,
        url: str,
        *,
        validation_percent: float = 20.0,
        prediction_max_count: int = 1_000_000,
        prediction_max_age_s: float = 7 * 24 * 3600,
        pool_max_size: int = 4,
        timeout_s: float = 5.0,
    ):
        self.validation_percent = validation_percent
        self.db = Database(url, max_size=pool_max_size, timeout_s=timeout_s)
        self._predictions = PostgresPredictionLog(
            self.db, max_count=prediction_max_count, max_age_s=prediction_max_age_s
        )
        self._workers = PostgresWorkers(self.db)

    def add_samples(self, samples: Sequence[NewSample]) -> AddResult:
        for sample in samples:
            refuse_nul(**asdict(sample))
        with self.db.transaction() as conn:
            # One writer at a time, across every process and replica, so that:
            # - ids are handed out in commit order. The trainer's data cursor is max(id): a
            #   sample committed after a higher id would sit below the cursor, unseen forever.
            #   Locks are released after the commit is visible, so the next writer's ids are
            #   all above every committed id.
            # - dedupe and supersede see every committed sample: each statement below takes a
            #   fresh snapshot (READ COMMITTED) after the lock, so two replicas can't both
            #   store the same text and label as active.
            # Readers never wait on it. A transaction lock: the server drops it with the
            # transaction, even if this process dies.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (SAMPLES_LOCK,))
            return policy.add_samples(
                PostgresSampleWriter(conn),
                samples,
                validation_percent=self.validation_percent,
                now=time.time(),
            )

    def samples(
        self, *, split: str | None = None, after_id: int = 0, include_superseded: bool = False
    ) -> Iterator[StoredSample]:
        query = f"SELECT {SAMPLE_COLUMNS} FROM samples WHERE id > %s"
        params: list = [after_id]
        if not include_superseded:
            query += " AND superseded_by IS NULL"
        if split is not None:
            query += " AND split = %s"
            params.append(split)
        with self.db.connection() as conn:
            rows = conn.execute(query + " ORDER BY id", params).fetchall()
        return (StoredSample(*row) for row in rows)

    def count_samples(self, *, after_id: int = 0) -> int:
        return self._value(
            "SELECT count(*) FROM samples WHERE id > %s AND superseded_by IS NULL", (after_id,)
        )

    def oldest_sample_time(self, *, after_id: int = 0) -> float | None:
        return self._value(
            "SELECT min(created_at) FROM samples WHERE id > %s AND superseded_by IS NULL",
            (after_id,),
        )

    def agreement(self, window: int) -> tuple[int, int]:
        with self.db.connection() as conn:
            agreed, total = conn.execute(
                "SELECT coalesce(sum((label = predicted_label)::int), 0), count(*) FROM"
                " (SELECT label, predicted_label FROM samples WHERE predicted_label IS NOT NULL"
                " ORDER BY id DESC LIMIT %s) AS recent",
                (window,),
            ).fetchone()
        return agreed, total

    def max_sample_id(self) -> int:
        return self._value("SELECT coalesce(max(id), 0) FROM samples", ())

    def _value(self, query: str, params: Sequence):
        with self.db.connection() as conn:
            return conn.execute(query, params).fetchone()[0]

    def start_run(
        self, *, trigger: str, parent: str | None, data_cursor: int, train_samples: int,
        validation_samples: int,
    ) -> int:  # fmt: skip
        refuse_nul(trigger=trigger, parent=parent)
        with self.db.transaction() as conn:
            return conn.execute(
                "INSERT INTO training_runs (trigger, state, started_at, parent, data_cursor,"
                " train_samples, validation_samples) VALUES (%s, %s, %s, %s, %s, %s, %s)"
                " RETURNING id",
                (trigger, RunState.RUNNING.value, time.time(), parent, data_cursor,
                 train_samples, validation_samples),
            ).fetchone()[0]  # fmt: skip

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
        refuse_nul(reason=reason, candidate=candidate, report=report)
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE training_runs SET state = %s, reason = %s, candidate = %s, report = %s,"
                " finished_at = %s WHERE id = %s",
                (ended, reason, candidate, Jsonb(report), time.time(), run_id),
            )

    def runs(self, *, limit: int = 20, states: Sequence[RunState | str] = ()) -> list[TrainingRun]:
        wanted = [RunState(state).value for state in states]
        where = "WHERE state = ANY(%s)" if wanted else ""
        with self.db.connection() as conn:
            rows = conn.execute(
                f"SELECT {RUN_COLUMNS} FROM training_runs {where} ORDER BY id DESC LIMIT %s",
                (wanted, limit) if wanted else (limit,),
            ).fetchall()
        return [
            TrainingRun(run_id, trigger, RunState(state), *rest, report=report)
            for run_id, trigger, state, *rest, report in rows
        ]

    def fail_interrupted_runs(self, reason: str) -> int:
        refuse_nul(reason=reason)
        with self.db.transaction() as conn:
            return conn.execute(
                "UPDATE training_runs SET state = %s, reason = %s, finished_at = %s"
                " WHERE state = %s",
                (RunState.FAILED.value, reason, time.time(), RunState.RUNNING.value),
            ).rowcount

    @contextmanager
    def run_lock(self) -> Iterator[None]:
        """One training run at a time across every host; TrainingBusy when another holds it.

        A session-level advisory lock on a connection of its own, held for the whole run:
        when the trainer dies, its connection goes and the server releases the lock."""
        with self.db.dedicated() as conn:
            # A trainer host that vanishes (power, network) closes no socket: make the
            # server probe this one, so its lock is freed in about a minute, not 2 hours.
            for setting in ("idle = 30", "interval = 10", "count = 3"):
                conn.execute(f"SET tcp_keepalives_{setting}")
            taken = conn.execute("SELECT pg_try_advisory_lock(%s)", (RUN_LOCK,)).fetchone()[0]
            if not taken:
                raise TrainingBusy("a training run is already in progress (on some host)")
            yield

    # The prediction log and the heartbeats, in the same database.
    def log_predictions(self, records: Sequence[PredictionRecord]) -> None:
        self._predictions.log_predictions(records)

    def get_predictions(self, ids: Sequence[str]) -> dict[str, PredictionRecord]:
        return self._predictions.get_predictions(ids)

    def latest_prediction_for_text(self, texts: Sequence[str]) -> dict[str, PredictionRecord]:
        return self._predictions.latest_prediction_for_text(texts)

    def prune_predictions(self) -> None:
        self._predictions.prune_predictions()

    def heartbeat(self, worker_id: str, host: str, pid: int, state: dict) -> None:
        self._workers.heartbeat(worker_id, host, pid, state)

    def workers(self, *, seen_within_s: float | None = None) -> list[WorkerRecord]:
        return self._workers.workers(seen_within_s=seen_within_s)

    def forget_worker(self, worker_id: str) -> None:
        self._workers.forget_worker(worker_id)

    # Dump and restore, for `copy.copy_store`.
    def dump_rows(self, table: str) -> Iterator[tuple]:
        """Every row of `table` in `copy.COLUMNS` order, oldest first, a page at a time."""
        return postgres_rows.dump_rows(self.db, table)

    def restore_rows(self, table: str, rows: Iterable[tuple]) -> int:
        """Insert dumped rows, ids and all, in one transaction; meant for an empty table."""
        return postgres_rows.restore_rows(self.db, table, rows)

    def close(self) -> None:
        self.db.close()
