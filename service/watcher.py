"""Each worker follows CURRENT and says what it serves: a poll thread and its heartbeat.

Heartbeats go to the store, so /status on any replica lists every replica's workers; a
worker not seen for a while is shown as stale (it died, or cannot reach the store).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import asdict

from service import metrics
from service.labels import LabelCache
from service.swap import ServingModel
from training.registry import RegistryError
from training.store import WorkerStore

log = logging.getLogger("livetune.swap")
HEARTBEAT_S = 2.0  # an unchanged state is still re-sent this often, so last_seen stays fresh
SHOWN_S = 3_600.0  # /status lists workers seen within this long; older ones are gone


class Watcher:
    """Polls CURRENT and the label set's version, and makes a ServingModel follow both;
    sends the worker's heartbeat."""

    def __init__(
        self,
        serving: ServingModel,
        workers: WorkerStore,
        labels: LabelCache,
        poll_s: float = 0.5,
    ):
        self.serving = serving
        self.workers = workers
        self.labels = labels
        self.poll_s = poll_s
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.worker_id = f"{self.host}:{self.pid}"
        self._stop = threading.Event()
        self._sent: dict | None = None
        self._sent_at = 0.0
        self._store_down = False

    def start(self) -> None:
        self.check()
        threading.Thread(target=self._run, name="livetune-swap", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def check(self) -> None:
        """One poll: follow the label set and CURRENT, then send this worker's heartbeat
        if it is due."""
        try:  # labels first: an adapter trained on a new label finds it served
            self.serving.follow_labels(self.labels.latest())
        except Exception as exc:  # the store may be down: serve the set last known
            if not self._labels_failing:
                log.warning("cannot follow the label set; serving the one last known: %s", exc)
            self._labels_failing = True
        else:
            self._labels_failing = False
        try:
            target = self.serving.registry.current()
        except RegistryError as exc:  # unreachable, or refused: keep serving; say so
            self._poll_failed(exc)
        else:
            self.serving.follow(target)
            self.serving.state.last_poll_error = None
        self._heartbeat()

    def _poll_failed(self, exc: Exception) -> None:
        state = self.serving.state
        if state.last_poll_error is None:
            log.warning("cannot reach the adapter registry; still serving %s: %s",
                        state.adapter, exc)  # fmt: skip
        state.poll_failures += 1
        state.last_poll_error = str(exc)
        metrics.record_poll_failure()

    def _heartbeat(self) -> None:
        state = asdict(self.serving.state)
        if state == self._sent and time.monotonic() - self._sent_at < HEARTBEAT_S:
            return
        try:
            self.workers.heartbeat(self.worker_id, self.host, self.pid, state)
        except Exception as exc:  # the store may be down: serving goes on regardless
            if not self._store_down:
                log.warning("cannot send this worker's heartbeat: %s", exc)
            self._store_down = True
            return
        self._store_down = False
        self._labels_failing = False
        self._sent, self._sent_at = state, time.monotonic()

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.check()
            except Exception:  # the watcher must outlive any one bad poll
                log.exception("adapter watcher: poll failed")


def worker_states(workers: WorkerStore, stale_after_s: float) -> list[dict]:
    """Every recently seen worker of every replica, each marked stale if not seen lately."""
    fresh = {w.worker_id for w in workers.workers(seen_within_s=stale_after_s)}
    return [
        {
            **w.state,
            "host": w.host,
            "pid": w.pid,
            "last_seen": w.last_seen,
            "stale": w.worker_id not in fresh,
        }  # fmt: skip
        for w in workers.workers(seen_within_s=SHOWN_S)
    ]
