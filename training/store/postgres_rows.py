"""Dump and restore whole PostgreSQL tables, for `copy.copy_store`."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from psycopg import sql

from training.store.copy import COLUMNS, JSON_COLUMNS
from training.store.postgres_pool import Database, refuse_nul
from training.store.postgres_schema import SAMPLES_LOCK

PAGE = 1_000


def order_key(table: str) -> str:
    """samples and runs are in id order; the prediction log in logging order (seq)."""
    return "seq" if table == "predictions" else "id"


def dump_rows(db: Database, table: str) -> Iterator[tuple]:
    """Every row of `table` in COLUMNS order, oldest first, JSON as text, a page at a time
    (no connection is held between pages)."""
    listed = sql.SQL(", ").join(
        sql.SQL("{}::text").format(sql.Identifier(c)) if c in JSON_COLUMNS else sql.Identifier(c)
        for c in COLUMNS[table]
    )
    query = sql.SQL("SELECT {key}, {listed} FROM {table} WHERE {key} > %s ORDER BY {key} LIMIT %s")
    query = query.format(
        key=sql.Identifier(order_key(table)), listed=listed, table=sql.Identifier(table)
    )
    after = 0
    while True:
        with db.connection() as conn:
            page = conn.execute(query, (after, PAGE)).fetchall()
        if not page:
            return
        after = page[-1][0]
        yield from (row[1:] for row in page)


def restore_rows(db: Database, table: str, rows: Iterable[tuple]) -> int:
    """COPY dumped rows into `table` in one transaction and move its id sequence past them
    (predictions get fresh seq numbers, in the dumped order)."""
    columns = sql.SQL(", ").join(map(sql.Identifier, COLUMNS[table]))
    copy_in = sql.SQL("COPY {} ({}) FROM STDIN").format(sql.Identifier(table), columns)
    count = 0
    with db.transaction() as conn:
        # Keeps add_samples out while ids are copied in; superseded_by points forward, and
        # its foreign key is checked at commit (DEFERRABLE INITIALLY DEFERRED).
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (SAMPLES_LOCK,))
        with conn.cursor().copy(copy_in) as copy:
            for row in rows:
                refuse_nul(**{f"{table} row {row[0]}": row})
                copy.write_row(row)
                count += 1
        if order_key(table) == "id" and count:
            conn.execute(
                sql.SQL("SELECT setval(pg_get_serial_sequence({}, 'id'), max(id)) FROM {}").format(
                    sql.Literal(table), sql.Identifier(table)
                )
            )
    return count
