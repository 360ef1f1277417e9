"""The trainer's background loop: poll for due runs, run them, and take on-demand requests."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

from training.backends import open_backends
from training.job import TrainingJob
from training.job_settings import JobSettings
from training.locks import TrainingBusy
from training.store import TrainingRun

log = logging.getLogger(__name__)


def yield_cpu(niceness: int) -> None:
    """Lower this process's CPU priority so serving workers always come first.

    A niced trainer may use every core while serving is idle and gets almost none while
    it is busy, which protects serving better than a thread cap alone: one trainer thread
    at normal priority would still take a whole core from the API. The other side of
    it, a niced thread starved on a busy core holding up the rest of the run, is
    training/threads.py's to avoid: it trains on the cores other processes leave free.
    """
    if niceness > 0:
        os.nice(niceness)


def job_from_settings(settings: JobSettings) -> TrainingJob:
    """A TrainingJob on the configured backends."""
    return TrainingJob(open_backends(settings), settings)


class TrainingLoop:
    """Runs `job` whenever it is due or requested, one run at a time, until stopped."""

    def __init__(
        self,
        job: TrainingJob,
        poll_s: float,
        on_run: Callable[[TrainingRun], None] | None = None,
    ):
        self.job = job
        self.poll_s = poll_s
        self.on_run = on_run  # told of every finished run (the Trainer counts them)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._requested = False
        self.running = False

    def request(self) -> bool:
        """Ask for a run now; False (and nothing queued) if one is already running."""
        if self.running or self._requested:
            return False
        self._requested = True
        self._wake.set()
        return True

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def run_forever(self) -> None:
        log.info("trainer loop started (poll every %.1f s)", self.poll_s)
        while not self._stop.is_set():
            self.tick()
            self._wake.wait(self.poll_s)
            self._wake.clear()

    def tick(self) -> TrainingRun | None:
        """One look: run now if requested or due. Never raises (the loop must survive)."""
        try:
            trigger = "manual" if self._requested else self.job.due()
            if trigger is None:
                return None
            self._requested = False
            self.running = True
            run = self.job.run(trigger)
            if self.on_run is not None:
                self.on_run(run)
            return run
        except TrainingBusy:
            log.info("a training run is already in progress elsewhere; will look again")
        except Exception:
            log.exception("trainer loop: unexpected error; will look again")
        finally:
            self.running = False
        return None
