"""The SQL both backends run, written once: standard SQL with `%s` placeholders, which
psycopg takes as they are and `qmark` turns into sqlite3's `?`. Only what differs
between the engines (DDL, locks, upserts, JSON columns) stays in each backend."""

from __future__ import annotations

from collections.abc import Sequence

from training.store import policy
from training.store.records import NewSample, RunState, StoredSample

SAMPLE_COLUMNS = (
    "id, text, label, split, source, client_id, prediction_id, predicted_label, adapter,"
    " created_at, superseded_by"
)
RUN_COLUMNS = (
    "id, trigger, state, reason, started_at, finished_at, parent, candidate, data_cursor,"
    " train_samples, validation_samples, report"
)
BY_CLIENT_IDS = "SELECT client_id, id FROM samples WHERE client_id IN ({})"
ACTIVE_BY_KEYS = (
    "SELECT text_key, label, id FROM samples WHERE text_key IN ({}) AND superseded_by IS NULL"
)
LOOKUP_CHUNK = 500  # bound parameters a statement: SQLite's limit is 999 on old builds
INSERT_SAMPLE = (
    "INSERT INTO samples (client_id, text, text_key, label, split, source, prediction_id,"
    " predicted_label, adapter, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
SUPERSEDE = (
    "UPDATE samples SET superseded_by = %s WHERE text_key = %s AND superseded_by IS NULL"
    " AND id != %s"
)
COUNT_ACTIVE = "SELECT count(*) FROM samples WHERE id > %s AND superseded_by IS NULL"
OLDEST_ACTIVE = "SELECT min(created_at) FROM samples WHERE id > %s AND superseded_by IS NULL"
MAX_ID = "SELECT coalesce(max(id), 0) FROM samples"
AGREEMENT = (
    "SELECT coalesce(sum(CASE WHEN label = predicted_label THEN 1 ELSE 0 END), 0), count(*)"
    " FROM (SELECT label, predicted_label FROM samples WHERE predicted_label IS NOT NULL"
    " ORDER BY id DESC LIMIT %s) AS recent"
)
START_RUN = (
    "INSERT INTO training_runs (trigger, state, started_at, parent, data_cursor,"
    " train_samples, validation_samples) VALUES (%s, %s, %s, %s, %s, %s, %s)"
)
FINISH_RUN = (
    "UPDATE training_runs SET state = %s, reason = %s, candidate = %s, report = %s,"
    " finished_at = %s WHERE id = %s"
)
FAIL_RUNNING = "UPDATE training_runs SET state = %s, reason = %s, finished_at = %s WHERE state = %s"


def qmark(sql: str) -> str:
    """The statement in sqlite3's placeholder style."""
    return sql.replace("%s", "?")


def samples_query(split: str | None, after_id: int, include_superseded: bool):
    """(SELECT of the samples above `after_id` in id order, its parameters)."""
    query, params = f"SELECT {SAMPLE_COLUMNS} FROM samples WHERE id > %s", [after_id]
    if not include_superseded:
        query += " AND superseded_by IS NULL"
    if split is not None:
        query += " AND split = %s"
        params.append(split)
    return query + " ORDER BY id", params


def runs_query(states: Sequence[RunState | str], limit: int):
    """(SELECT of the newest runs, only those in `states` if given, its parameters)."""
    wanted = [RunState(state).value for state in states]
    where = f"WHERE state IN ({', '.join(['%s'] * len(wanted))})" if wanted else ""
    return f"SELECT {RUN_COLUMNS} FROM training_runs {where} ORDER BY id DESC LIMIT %s", (
        *wanted,
        limit,
    )


class SQLSampleWriter(policy.SampleWriter):
    """The policy's primitives on a DB-API connection inside the samples transaction."""

    def __init__(self, conn, style=lambda sql: sql, returning: bool = True):
        self.conn = conn
        self.style = style  # the driver's placeholder style
        self.returning = returning  # INSERT ... RETURNING id, or the cursor's lastrowid

    def _execute(self, sql: str, params: Sequence):
        return self.conn.execute(self.style(sql), params)

    def _lookup(self, template: str, values: Sequence[str]) -> list[tuple]:
        rows = []
        for start in range(0, len(values), LOOKUP_CHUNK):
            chunk = values[start : start + LOOKUP_CHUNK]
            sql = template.format(", ".join(["%s"] * len(chunk)))
            rows += self._execute(sql, chunk).fetchall()
        return rows

    def ids_for_client_ids(self, client_ids: Sequence[str]) -> dict[str, int]:
        return dict(self._lookup(BY_CLIENT_IDS, list(client_ids)))

    def active_by_key(self, keys: Sequence[str]) -> dict[str, dict[str, int]]:
        found: dict[str, dict[str, int]] = {}
        for key, label, sample_id in self._lookup(ACTIVE_BY_KEYS, list(keys)):
            found.setdefault(key, {})[label] = sample_id
        return found

    def insert(self, sample: NewSample, *, key: str, split: str, created_at: float) -> int:
        row = (
            *(sample.client_id, sample.text, key, sample.label, split, sample.source),
            *(sample.prediction_id, sample.predicted_label, sample.adapter, created_at),
        )
        if self.returning:
            return self._execute(INSERT_SAMPLE + " RETURNING id", row).fetchone()[0]
        return self._execute(INSERT_SAMPLE, row).lastrowid

    def supersede_others(self, key: str, winner_id: int) -> None:
        self._execute(SUPERSEDE, (winner_id, key, winner_id))


class SQLReads:
    """The correction reads both backends answer with the same SQL, over their `_rows`."""

    def _rows(self, query: str, params: Sequence) -> list[tuple]:
        raise NotImplementedError  # each backend runs `query` (in `%s` style) its own way

    def samples(
        self, *, split: str | None = None, after_id: int = 0, include_superseded: bool = False
    ) -> list[StoredSample]:
        query, params = samples_query(split, after_id, include_superseded)
        return [StoredSample(*row) for row in self._rows(query, params)]

    def count_samples(self, *, after_id: int = 0) -> int:
        return self._rows(COUNT_ACTIVE, (after_id,))[0][0]

    def oldest_sample_time(self, *, after_id: int = 0) -> float | None:
        return self._rows(OLDEST_ACTIVE, (after_id,))[0][0]

    def agreement(self, window: int) -> tuple[int, int]:
        [(agreed, total)] = self._rows(AGREEMENT, (window,))
        return agreed, total

    def max_sample_id(self) -> int:
        return self._rows(MAX_ID, ())[0][0]
