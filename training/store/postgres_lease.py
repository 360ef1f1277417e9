"""Leases in PostgreSQL: a named claim with a holder and an expiry, for the training run.

A row, not a session-level advisory lock: behind a pooler in transaction mode a session
is not the client's (the lock would stay with an idle pooled backend, and another client
could be granted it on that same backend), and a row works through any pooler, in any
mode, and directly. A holder renews its lease while it works; one that dies (kill -9, a
vanished host) stops renewing and the lease expires `ttl_s` later. Times are the database
server's clock, the one every host shares.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from training.locks import LeaseLost, TrainingBusy
from training.store.base import StoreUnavailable
from training.store.postgres_pool import Database

log = logging.getLogger("livetune.store")

SERVER_NOW = "extract(epoch FROM clock_timestamp())::double precision"
# Taken when free or expired, in one statement: the row lock that ON CONFLICT takes makes
# two claimants race safely, and the WHERE is re-checked on the row's latest version.
ACQUIRE = f"""INSERT INTO leases (name, holder, acquired_at, expires_at)
VALUES (%(name)s, %(holder)s, {SERVER_NOW}, {SERVER_NOW} + %(ttl)s)
ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,
    acquired_at = excluded.acquired_at, expires_at = excluded.expires_at
WHERE leases.expires_at < {SERVER_NOW}
RETURNING holder"""
RENEW = f"""UPDATE leases SET expires_at = {SERVER_NOW} + %(ttl)s
WHERE name = %(name)s AND holder = %(holder)s AND expires_at >= {SERVER_NOW}"""
RELEASE = "DELETE FROM leases WHERE name = %(name)s AND holder = %(holder)s"


def new_holder() -> str:
    """Who holds a lease, as operators read it in the table: host, pid and a nonce."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Lease:
    """One claim on `name`, renewed every `ttl_s / 3` by a thread while it is held."""

    def __init__(self, db: Database, name: str, ttl_s: float):
        self.db = db
        self.name = name
        self.ttl_s = ttl_s
        self.holder = new_holder()
        self._stop = threading.Event()
        self._lost = False
        self._thread: threading.Thread | None = None

    def _params(self) -> dict:
        return {"name": self.name, "holder": self.holder, "ttl": self.ttl_s}

    def acquire(self) -> bool:
        with self.db.transaction() as conn:
            return conn.execute(ACQUIRE, self._params()).fetchone() is not None

    def confirm(self) -> None:
        """Renew now, or raise LeaseLost: call before an act that only the holder may do."""
        with self.db.transaction() as conn:
            renewed = conn.execute(RENEW, self._params()).rowcount == 1
        if not renewed:
            self._lost = True
        if self._lost:  # once lost, another may have claimed it since: never trust it again
            raise LeaseLost(f"the {self.name!r} lease expired and may be held by another host")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            with self.db.transaction() as conn:
                conn.execute(RELEASE, self._params())
        except StoreUnavailable as exc:  # it expires by itself
            log.warning("could not release the %r lease (it expires in %ss): %s",
                        self.name, self.ttl_s, exc)  # fmt: skip

    def keep_renewed(self) -> None:
        self._thread = threading.Thread(target=self._renew, name=f"lease-{self.name}", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                self.confirm()
            except LeaseLost as exc:
                log.error("%s: the run goes on but will not promote", exc)
                return
            except StoreUnavailable as exc:  # retried; past the expiry, confirm() says lost
                log.warning("could not renew the %r lease: %s", self.name, exc)


@contextmanager
def held(db: Database, name: str, ttl_s: float) -> Iterator[Lease]:
    """Hold the lease `name` for the block (TrainingBusy if another holds it)."""
    lease = Lease(db, name, ttl_s)
    if not lease.acquire():
        raise TrainingBusy("a training run is already in progress (on some host)")
    lease.keep_renewed()
    try:
        yield lease
    finally:
        lease.release()
