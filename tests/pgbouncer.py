"""A throwaway PgBouncer in front of the test cluster (tests/pg.py): Debian's binary, a temp
folder, a free loopback port; transaction pooling by default, the mode that breaks
session state, server-side prepared statements and session advisory locks.

PgBouncer in transaction mode refuses the `options` startup parameter that tests/pg.py's
schemas-as-databases rely on, and a database per test would leave a pool per test behind
(the cluster's 100 connections run out): so the tests share one pooled database and each
starts from an empty `public` schema (`fresh_url`). PgBouncer refuses to run as root, so
as root it runs as the `postgres` user, like the cluster.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from benchmarks.harness.server import free_port
from tests import pg

# Server connections per pool. Transaction mode: fewer than the clients' pools hold, so a
# client's consecutive transactions land on different server connections, as they do in
# production. Session mode gives each client session a server connection of its own for
# as long as it lasts, so it needs one per client (every store keeps up to 4 open).
POOL_SIZE = {"transaction": 3, "session": 30}


def find_binary() -> str | None:
    """Debian puts it in /usr/sbin, which a non-root PATH may lack."""
    return shutil.which("pgbouncer", path=f"{os.environ.get('PATH', '')}:/usr/sbin")


class Bouncer:
    """One PgBouncer process pooling every database of `cluster` under one login."""

    def __init__(
        self, binary: str, cluster: pg.Cluster, mode: str = "transaction", pool_size: int = 0
    ):
        self.binary = binary
        self.cluster = cluster
        self.mode = mode
        self.pool_size = pool_size or POOL_SIZE[mode]
        self.root = Path(tempfile.mkdtemp(prefix="livetune-pgbouncer-"))
        self.log = self.root / "pgbouncer.log"
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.database = f"pooled_{mode}"

    def config(self) -> Path:
        (self.root / "userlist.txt").write_text(f'"{pg.USER}" "{pg.PASSWORD}"\n')
        ini = self.root / "pgbouncer.ini"
        ini.write_text(
            "[databases]\n"
            f"{self.database} = host=127.0.0.1 port={self.cluster.port}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            f"auth_type = scram-sha-256\nauth_file = {self.root / 'userlist.txt'}\n"
            f"pool_mode = {self.mode}\ndefault_pool_size = {self.pool_size}\n"
            # The cluster's 100 connections are shared by every test: give idle ones back.
            "server_idle_timeout = 2\n"
            f"max_client_conn = 1000\nlogfile = {self.log}\n"
            f"pidfile = {self.root / 'pgbouncer.pid'}\n"
        )
        if os.geteuid() == 0:
            for path in (self.root, *self.root.iterdir()):
                shutil.chown(path, pg.RUN_AS, pg.RUN_AS)
        return ini

    def start(self) -> Bouncer:
        command = [self.binary, str(self.config())]
        if os.geteuid() == 0:
            command = ["runuser", "-u", pg.RUN_AS, "--", *command]
        # Not a pipe: nobody reads it, and a full pipe blocks PgBouncer's logging, then
        # PgBouncer. It writes the same lines to its log file.
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"pgbouncer exited: {self.log_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"pgbouncer did not listen on {self.port}: {self.log_text()}")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def url(self) -> str:
        return f"postgresql://{pg.USER}:{pg.PASSWORD}@127.0.0.1:{self.port}/{self.database}"

    def fresh_url(self) -> str:
        """The pooled URL of the shared database, emptied (run one test at a time)."""
        self.cluster.admin(
            "DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public", dbname=self.database
        )
        return self.url()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: immediate shutdown
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def bouncer(
    cluster: pg.Cluster, mode: str = "transaction", pool_size: int = 0
) -> Iterator[Bouncer]:
    """A started PgBouncer in front of `cluster`, stopped on the way out (`pool_size`
    server connections per pool: 0 = the tests' POOL_SIZE for `mode`)."""
    binary = find_binary()
    if binary is None:
        pg.unavailable("no pgbouncer binary (apt-get install pgbouncer)")
    server = Bouncer(binary, cluster, mode, pool_size)
    cluster.admin(f"CREATE DATABASE {server.database}")
    try:
        yield server.start()
    finally:
        server.stop()
