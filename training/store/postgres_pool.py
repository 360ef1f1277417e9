"""Connections to PostgreSQL: a small pool per process, and every connection failure
turned into `StoreUnavailable` with a message that names the database but not the password.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool, PoolTimeout

from training.store.base import StoreUnavailable
from training.store.postgres_schema import migrate

# Added to the URL unless it sets them: fail a connection attempt to a host that drops
# packets within seconds, and show up in pg_stat_activity under a recognisable name.
CONNECT_DEFAULTS = {"connect_timeout": "5", "application_name": "livetune"}
# psycopg's own default: a statement is prepared on the server at its 5th execution.
DEFAULT_PREPARE_THRESHOLD = 5


def split_prepare(url: str, prepare: bool) -> tuple[str, int | None]:
    """(the URL for libpq, psycopg's prepare_threshold).

    Server-side prepared statements live on one server connection, and a pooler in
    transaction mode hands the next transaction another one ("prepared statement _pg3_0
    already exists", or "does not exist"): so none unless `prepare` says no pooler sits in
    between. A `prepare_threshold` URL parameter (a count, or `none`) overrides it; libpq
    does not know it, so it is taken out of the URL before libpq parses the rest.
    """
    threshold = DEFAULT_PREPARE_THRESHOLD if prepare else None
    parts = urlsplit(url)
    rest = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "prepare_threshold":
            threshold = parse_threshold(value)
        else:
            rest.append((key, value))
    return urlunsplit(parts._replace(query=urlencode(rest))), threshold


def parse_threshold(value: str) -> int | None:
    if value.strip().lower() in ("", "none", "null"):
        return None
    try:
        threshold = int(value)
    except ValueError:
        threshold = -1
    if threshold < 0:
        raise ValueError(
            f"prepare_threshold={value!r} in the store URL: use a count of executions before"
            " a statement is prepared (0 = at once) or `none` (never, for a pooler)"
        )
    return threshold


def describe(params: Mapping[str, str]) -> str:
    """'PostgreSQL at host:port/dbname' for messages: never the user's password."""
    host = params.get("host") or params.get("hostaddr") or "localhost"
    return f"PostgreSQL at {host}:{params.get('port') or 5432}/{params.get('dbname') or '?'}"


def refuse_nul(**fields) -> None:
    """ValueError naming the field when a text holds NUL, which PostgreSQL text cannot."""
    for name, value in fields.items():
        if contains_nul(value):
            raise ValueError(f"{name} contains a NUL character (\\x00), which cannot be stored")


def contains_nul(value) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, Mapping):
        return any(contains_nul(k) or contains_nul(v) for k, v in value.items())
    if isinstance(value, Sequence):
        return any(contains_nul(item) for item in value)
    return False


class Database:
    """A psycopg pool (autocommit connections, checked before use) and its error handling.

    Each API worker process holds its own pool, so keep it small: replicas x workers x
    max_size must stay under the server's max_connections (or the pooler's).

    Nothing here relies on a session outliving a transaction (no SET but SET LOCAL, no
    session advisory lock, no prepared statement unless `prepare`), so the same code runs
    directly and behind PgBouncer in session or transaction mode.
    """

    def __init__(
        self,
        url: str,
        *,
        min_size: int = 1,
        max_size: int = 4,
        timeout_s: float = 5.0,
        prepare: bool = False,
    ):
        url, self.prepare_threshold = split_prepare(url, prepare)
        params = conninfo_to_dict(url)
        self._down: str | None = None  # why the server is taken for down, None = it is up
        self.where = describe(params)
        self._password = params.get("password") or ""
        self.conninfo = make_conninfo(
            url, **{k: v for k, v in CONNECT_DEFAULTS.items() if k not in params}
        )
        with self.dedicated() as conn:  # not pooled: a refused login says why at once
            migrate(conn, self.where)
        # check= pings a connection as it leaves the pool, so one broken by a server
        # restart is replaced instead of failing a call. Reconnection gives up after
        # timeout_s, so the first call after an outage starts a fresh attempt at once
        # instead of waiting out a long exponential backoff.
        self._pool = ConnectionPool(
            self.conninfo,
            min_size=min_size,
            max_size=max_size,
            kwargs={"autocommit": True, "prepare_threshold": self.prepare_threshold},
            check=ConnectionPool.check_connection,
            timeout=timeout_s,
            reconnect_timeout=timeout_s,
            name="livetune-store",
            open=False,
        )
        self._pool.open(wait=False)

    def _fail_fast(self) -> None:
        """While the server is known to be down, each call first tries one direct
        connection (a refusal answers in a millisecond) instead of waiting out the pool's
        timeout (seconds a request, piling up threads); the first that connects ends it."""
        if self._down is None:
            return
        try:
            psycopg.connect(self.conninfo, connect_timeout=2).close()
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(self.message(exc)) from exc
        self._down = None

    def message(self, reason: object) -> str:
        text = " ".join(f"{self.where} is unavailable: {reason}".split())  # libpq's is 2 lines
        return text.replace(self._password, "***") if len(self._password) >= 4 else text

    @contextmanager
    def unavailable(self) -> Iterator[None]:
        """Turn a connection failure (refused, reset, timed out, shut down) into
        StoreUnavailable; SQL errors (a bug, a constraint) pass through as they are."""
        self._fail_fast()
        try:
            yield
        except PoolTimeout as exc:
            why, down = self._why(exc)
            self._down = self.message(why) if down else None
            raise StoreUnavailable(self.message(why)) from exc
        except psycopg.OperationalError as exc:  # a reset mid-query: the pool replaces it
            raise StoreUnavailable(self.message(exc)) from exc

    def _why(self, timeout: PoolTimeout) -> tuple[str, bool]:
        """(reason, whether the server is down): the pool only says it waited, so one
        direct attempt gets the server's own words (refused, unknown host, bad password)
        or shows the pool was merely all busy."""
        try:
            psycopg.connect(self.conninfo, connect_timeout=2).close()
        except psycopg.OperationalError as exc:
            return str(exc), True
        return f"{timeout}: every pooled connection stayed busy", False

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        """A pooled autocommit connection: each statement commits on its own."""
        with self.unavailable(), self._pool.connection() as conn:
            yield conn

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection]:
        """A pooled connection inside one transaction, committed when the block ends:
        durable once it returns (synchronous_commit stays on unless a caller opts out)."""
        with self.connection() as conn, conn.transaction():
            yield conn

    @contextmanager
    def dedicated(self) -> Iterator[psycopg.Connection]:
        """A connection of its own, outside the pool, closed when the block ends."""
        with (
            self.unavailable(),
            psycopg.connect(
                self.conninfo, autocommit=True, prepare_threshold=self.prepare_threshold
            ) as conn,
        ):
            yield conn

    def close(self) -> None:
        self._pool.close()
