"""A throwaway PostgreSQL cluster for the tests: Debian's binaries, a temp folder, a free
loopback port and a unix socket in that folder; never a system service.

initdb refuses to run as root (and CI runs as root), so as root every PostgreSQL binary
runs as the `postgres` system user that the Debian package creates, in a folder it owns.
"""

from __future__ import annotations

import atexit
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from benchmarks.harness.server import free_port

USER = "livetune"
PASSWORD = "pg-test-secret"  # TCP logins need it (scram), so tests can check it never leaks
RUN_AS = "postgres"
DATABASE = "livetune_tests"  # one per cluster; each test gets a schema of its own in it


def unavailable(reason: str) -> None:
    """Skip locally, but fail in CI: CI installs PostgreSQL and must run these tests."""
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL tests cannot run in CI: {reason}", pytrace=False)
    pytest.skip(f"PostgreSQL tests skipped: {reason}")


def find_bindir() -> Path | None:
    """The newest /usr/lib/postgresql/<version>/bin that has initdb, or initdb on PATH."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda path: int(path.parent.parent.name) if path.parent.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1].parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


def has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


class Cluster:
    """One initdb'd cluster in its own temp folder, started and stopped with pg_ctl."""

    def __init__(self, bindir: Path):
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="livetune-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sockets"
        self.log = self.root / "server.log"
        self.port = 0
        self._schemas = itertools.count(1)

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bindir / program), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", RUN_AS, "--", *command]
        done = subprocess.run(command, cwd=self.root, capture_output=True, text=True)
        if done.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"{program} failed: {done.stdout}{done.stderr}{log[-2000:]}")

    def init(self) -> Cluster:
        """initdb: scram passwords over TCP (what the store uses), trust on the socket."""
        self.sockets.mkdir()
        pwfile = self.root / "pwfile"
        pwfile.write_text(PASSWORD + "\n")
        if os.geteuid() == 0:
            for path in (self.root, self.sockets, pwfile):
                shutil.chown(path, RUN_AS, RUN_AS)
        self._run(
            "initdb", "-D", str(self.data), "-U", USER, f"--pwfile={pwfile}",
            "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8", "--locale=C",
            "--no-sync",
        )  # fmt: skip
        return self

    def start(self) -> None:
        """pg_ctl start on the port chosen at the first start (a fresh one then)."""
        self.port = self.port or free_port()
        options = f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                  "-o", options, "start")  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def url(self, dbname: str = DATABASE, schema: str | None = None) -> str:
        url = f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{dbname}"
        return f"{url}?options=-csearch_path%3D{schema}" if schema else url

    def admin(self, statement: str, dbname: str = "postgres") -> None:
        """Run one statement as the superuser over the socket, outside a transaction."""
        import psycopg

        with psycopg.connect(
            host=str(self.sockets), port=self.port, user=USER, dbname=dbname, autocommit=True
        ) as conn:
            conn.execute(statement)

    def fresh_url(self) -> str:
        """The URL of a fresh, empty schema, the only one on its search_path: as good as a
        new database for a store, in 6 ms rather than the 200+ of CREATE DATABASE."""
        schema = f"test_{next(self._schemas)}"
        self.admin(f"CREATE SCHEMA {schema}", dbname=DATABASE)
        return self.url(DATABASE, schema)

    def remove(self) -> None:
        """Stop the server if it runs and delete the folder; safe to call twice."""
        try:
            if self.running():
                self.stop("fast")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def cluster() -> Iterator[Cluster]:
    """A started cluster, stopped and deleted on the way out, also on failure."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        unavailable("psycopg is not installed (pip install 'psycopg[binary]' psycopg-pool)")
    bindir = find_bindir()
    if bindir is None:
        unavailable("no initdb in /usr/lib/postgresql/*/bin (apt-get install postgresql)")
    if os.geteuid() == 0 and (shutil.which("runuser") is None or not has_user(RUN_AS)):
        unavailable(f"running as root, without runuser or a {RUN_AS!r} user to run initdb as")
    server = Cluster(bindir)
    atexit.register(server.remove)  # a backstop, should the session die before teardown
    try:
        server.init().start()
        server.admin(f"CREATE DATABASE {DATABASE}")
        yield server
    finally:
        server.remove()
        atexit.unregister(server.remove)
