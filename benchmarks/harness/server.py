"""Starting and stopping the real `bentoml serve`, for benchmarks and integration tests.

Imports only the standard library, httpx and psutil, so the tests can use it too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[2]
BENTOML = str(Path(sys.executable).parent / "bentoml")


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def log_path(tmp_path: Path, port: int) -> Path:
    """Where the server started in `tmp_path` on `port` writes its output."""
    return tmp_path / f"server-{port}.log"


def log_tail(path: Path, lines: int = 40) -> str:
    """The last `lines` of a server log, or a note that there is none."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no server log)"


def own_env(**env: str) -> dict[str, str]:
    """This process's environment less any inherited LIVETUNE_* variable, offline, plus
    `env`: a child server or CLI is configured by what the caller says and nothing else."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("LIVETUNE_")}
    return {**inherited, "HF_HUB_OFFLINE": "1", **env}


def start_server(
    tmp_path: Path, port: int | None = None, target: str = "service.service:Livetune", **env: str
) -> tuple[subprocess.Popen, str]:
    """`bentoml serve target` on loopback with its data in `tmp_path`/data (unless `env`
    sets LIVETUNE_DATA_DIR: a replica of another server); inherited
    LIVETUNE_* variables are dropped so only `env` configures it."""
    port = port or free_port()
    environment = own_env(
        BENTOML_DO_NOT_TRACK="true",
        # BentoML wipes $BENTOML_HOME/prometheus_multiproc_dir when a server starts: one
        # home per server, so servers running side by side keep their own metrics.
        BENTOML_HOME=str(tmp_path / f"bentoml-{port}"),
        **{"LIVETUNE_DATA_DIR": str(tmp_path / "data"), **env},  # env may name another
    )
    command = [BENTOML, "serve", target, "--host", "127.0.0.1"]
    tmp_path.mkdir(parents=True, exist_ok=True)
    with open(log_path(tmp_path, port), "wb") as log:  # the child keeps its own copy
        process = subprocess.Popen(
            [*command, "--port", str(port)],
            cwd=ROOT,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return process, f"http://127.0.0.1:{port}"


def server_processes(process: subprocess.Popen) -> list[psutil.Process]:
    """The arbiter and its workers: circus starts each worker in a session of its own,
    so signalling the arbiter's process group alone would leave the workers running."""
    try:
        root = psutil.Process(process.pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def stop_server(process: subprocess.Popen) -> None:
    """SIGTERM to the server, then kill whatever of it is left after 20 s."""
    processes = server_processes(process)
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=20)
    for leftover in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            leftover.kill()
    process.wait()


def wait_for(url: str, process: subprocess.Popen, status: int = 200, timeout: float = 180) -> None:
    """Poll `url` until it answers `status`; fail if the server exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "server exited early"
        try:
            if httpx.get(url, timeout=2).status_code == status:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url} never answered {status}")


def kill_server(process: subprocess.Popen) -> None:
    """kill -9 of the whole server: arbiter and every worker, no chance to clean up."""
    processes = server_processes(process)
    assert len(processes) > 1, "expected the arbiter and its workers"
    for each in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            each.kill()
    process.wait()
    psutil.wait_procs(processes, timeout=10)


def wait_until(condition: Callable, timeout: float = 120.0, interval: float = 0.1):
    """Poll `condition` until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(interval)
    return value


@dataclass(frozen=True)
class Server:
    process: subprocess.Popen
    base: str  # http://127.0.0.1:<port>
    data_dir: Path
    log: Path


@contextlib.contextmanager
def running_server(tmp_path: Path, ready_timeout: float = 180, **env: str) -> Iterator[Server]:
    """`start_server`, ready on every worker, stopped on exit.

    /readyz is answered by whichever worker takes the connection, so this also waits for
    every worker's heartbeat (each sends it once its model is loaded). When anything
    fails meanwhile the log's tail goes to stderr: the server's side of it is there.
    """
    port = free_port()
    process, base = start_server(tmp_path, port, **env)
    data_dir = Path(env.get("LIVETUNE_DATA_DIR", tmp_path / "data"))
    server = Server(process, base, data_dir, log_path(tmp_path, port))
    workers = int(env.get("LIVETUNE_WORKERS", "1"))
    try:
        wait_for(f"{base}/readyz", process, timeout=ready_timeout)
        wait_until(lambda: len(heartbeating(server, shared="LIVETUNE_STORE_URL" in env)) >= workers)
        yield server
    except Exception:
        print(f"server log tail:\n{log_tail(server.log)}", file=sys.stderr, flush=True)
        raise
    finally:
        stop_server(process)


def heartbeating(server: Server, shared: bool = False) -> set[int]:
    """Pids of this server's workers that have sent a heartbeat.

    Read from the SQLite file in its data directory, or, for a server on a shared store,
    from /status (open while no token is configured), which lists every replica's workers.
    """
    pids = {p.pid for p in server_processes(server.process)}
    if shared:
        try:
            workers = httpx.get(f"{server.base}/status", timeout=5).json()["workers"]
        except (httpx.HTTPError, ValueError, KeyError):
            return set()
        host = socket.gethostname()
        return {w["pid"] for w in workers if w["host"] == host and not w["stale"]} & pids
    path = server.data_dir / "workers.sqlite3"
    if not path.exists():
        return set()
    with contextlib.closing(sqlite3.connect(path, timeout=5)) as db:
        try:
            return {pid for (pid,) in db.execute("SELECT pid FROM workers")} & pids
        except sqlite3.OperationalError:  # not created yet
            return set()
