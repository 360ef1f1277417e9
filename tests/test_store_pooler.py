"""The store contract through a real PgBouncer, in transaction mode (the one that breaks
session state and server-side prepared statements) and in session mode, and the URL's
`prepare_threshold`, the way out for a direct connection that wants prepared statements."""

from __future__ import annotations

import functools
import os

import pytest

if not os.environ.get("CI"):  # CI must run these: there a missing psycopg is an error
    pytest.importorskip("psycopg", reason="psycopg is not installed")

from tests import pgbouncer  # noqa: E402
from tests.store_contract import StoreContract  # noqa: E402
from training.store import NewSample  # noqa: E402
from training.store.postgres import PostgresStore  # noqa: E402
from training.store.postgres_pool import split_prepare  # noqa: E402


class TestThroughPgBouncerInTransactionMode(StoreContract):
    @pytest.fixture
    def open_store(self, pooled_url):
        return functools.partial(PostgresStore, pooled_url)


@pytest.mark.parametrize(
    ("url", "prepare", "threshold", "rest"),
    [
        ("postgresql://u:p@h:5432/db", False, None, "postgresql://u:p@h:5432/db"),
        ("postgresql://u:p@h/db", True, 5, "postgresql://u:p@h/db"),
        ("postgresql://u@h/db?prepare_threshold=0", False, 0, "postgresql://u@h/db"),
        ("postgresql://u@h/db?sslmode=require&prepare_threshold=none", True, None,
         "postgresql://u@h/db?sslmode=require"),
    ],
)  # fmt: skip
def test_prepare_threshold_comes_from_the_url_over_the_setting(url, prepare, threshold, rest):
    assert split_prepare(url, prepare) == (rest, threshold)


@pytest.mark.parametrize("value", ["-1", "often", "1.5"])
def test_a_bad_prepare_threshold_is_refused_with_what_to_write(value):
    with pytest.raises(ValueError, match="prepare_threshold.*count.*none"):
        split_prepare(f"postgresql://u@h/db?prepare_threshold={value}", False)


def test_statements_are_prepared_directly_only_when_asked(postgres_url):
    def prepared(url: str, **options) -> int:
        store = PostgresStore(url, **options)
        try:
            with store.db.connection() as conn:  # one server session: read its own statements
                for _ in range(3):
                    conn.execute("SELECT count(*) FROM samples WHERE id > %s", (0,))
                return conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()[0]
        finally:
            store.close()

    assert prepared(postgres_url) == 0
    assert prepared(postgres_url, prepare=True) == 0  # psycopg prepares at the 5th run
    joined = "&" if "?" in postgres_url else "?"
    assert prepared(f"{postgres_url}{joined}prepare_threshold=0") > 0


def test_a_store_url_with_prepare_threshold_reaches_a_working_store(pooled_url):
    store = PostgresStore(f"{pooled_url}?prepare_threshold=none")
    try:
        assert store.add_samples([NewSample("hello", "a")]).ids
    finally:
        store.close()


@pytest.fixture(scope="module")
def session_bouncer(postgres_server):
    with pgbouncer.bouncer(postgres_server, "session") as server:
        yield server


class TestThroughPgBouncerInSessionMode(StoreContract):
    @pytest.fixture
    def open_store(self, session_bouncer):
        return functools.partial(PostgresStore, session_bouncer.fresh_url())
