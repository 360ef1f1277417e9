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
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict

from psycopg.types.json import Jsonb

from training.store import policy, postgres_rows
from training.store import queries as q
from training.store.base import ComposedStore
from training.store.labels import LabelWriter
from training.store.postgres_lease import Lease
from training.store.postgres_lease import held as lease_held
from training.store.postgres_pool import Database, refuse_nul
from training.store.postgres_predictions import PostgresPredictionLog
from training.store.postgres_schema import SAMPLES_LOCK
from training.store.postgres_workers import PostgresWorkers
from training.store.queries import SQLReads, SQLSampleWriter
from training.store.records import (
    AddResult,
    NewSample,
    RunState,
    TrainingRun,
)

# The training run's lease: its row's name in the leases table.
RUN_LEASE = "training-run"


class PostgresStore(SQLReads, ComposedStore):
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
        prepare: bool = False,
        run_lease_s: float = 60.0,
    ):
        self.validation_percent = validation_percent
        self.run_lease_s = run_lease_s
        self.db = Database(url, max_size=pool_max_size, timeout_s=timeout_s, prepare=prepare)
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
                SQLSampleWriter(conn),
                samples,
                validation_percent=self.validation_percent,
                now=time.time(),
            )

    def _rows(self, query: str, params: Sequence) -> list[tuple]:
        with self.db.connection() as conn:
            return conn.execute(query, params).fetchall()

    @contextmanager
    def _label_transaction(self) -> Iterator[LabelWriter]:
        with self.db.transaction() as conn:
            # The version row's lock orders label changes across replicas; readers never
            # wait on it. Taken first, so the set read after it is the latest committed.
            conn.execute("SELECT version FROM label_set WHERE id = 1 FOR UPDATE")
            yield LabelWriter(conn)

    def start_run(
        self, *, trigger: str, parent: str | None, data_cursor: int, train_samples: int,
        validation_samples: int,
    ) -> int:  # fmt: skip
        refuse_nul(trigger=trigger, parent=parent)
        with self.db.transaction() as conn:
            return conn.execute(
                q.START_RUN + " RETURNING id",
                (trigger, RunState.RUNNING.value, time.time(), parent, data_cursor,
                 train_samples, validation_samples),
            ).fetchone()[0]  # fmt: skip

    def finish_run(self, run_id: int, *, state: RunState | str, reason: str | None,
                   candidate: str | None, report: dict) -> None:  # fmt: skip
        ended = RunState(state).value
        refuse_nul(reason=reason, candidate=candidate, report=report)
        with self.db.transaction() as conn:
            conn.execute(
                q.FINISH_RUN, (ended, reason, candidate, Jsonb(report), time.time(), run_id)
            )

    def runs(self, *, limit: int = 20, states: Sequence[RunState | str] = ()) -> list[TrainingRun]:
        with self.db.connection() as conn:
            rows = conn.execute(*q.runs_query(states, limit)).fetchall()
        return [
            TrainingRun(run_id, trigger, RunState(state), *rest, report=report)
            for run_id, trigger, state, *rest, report in rows
        ]

    def fail_interrupted_runs(self, reason: str) -> int:
        refuse_nul(reason=reason)
        with self.db.transaction() as conn:
            return conn.execute(
                q.FAIL_RUNNING,
                (RunState.FAILED.value, reason, time.time(), RunState.RUNNING.value),
            ).rowcount

    def run_lock(self) -> AbstractContextManager[Lease]:
        """One training run at a time across every host; TrainingBusy when another holds it.

        A lease row renewed while the run lives (training/store/postgres_lease.py): a
        trainer that dies releases its claim `run_lease_s` later, through any pooler."""
        return lease_held(self.db, RUN_LEASE, self.run_lease_s)

    # Dump and restore, for `copy.copy_store`.
    def dump_rows(self, table: str) -> Iterator[tuple]:
        """Every row of `table` in `copy.COLUMNS` order, oldest first, a page at a time."""
        return postgres_rows.dump_rows(self.db, table)

    def restore_rows(self, table: str, rows: Iterable[tuple]) -> int:
        """Insert dumped rows, ids and all, in one transaction; meant for an empty table."""
        return postgres_rows.restore_rows(self.db, table, rows)

    def close(self) -> None:
        self.db.close()
