"""The run lock: one training run at a time per store, released if its holder dies."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class TrainingBusy(RuntimeError):
    """Another training run holds the lock."""


class LeaseLost(RuntimeError):
    """The run's claim expired (it was not renewed in time): another may hold it now."""


class Held:
    """What a run lock yields: `confirm()` before an act only the holder may do (moving
    CURRENT). A kernel lock cannot be lost while its process lives, so this one never
    raises; the database's lease (training/store/postgres_lease.py) can."""

    def confirm(self) -> None:
        return None


@contextmanager
def file_lock(path: Path) -> Iterator[Held]:
    """An exclusive flock on `path`, never waited for: the kernel drops it with the process.

    It keeps runs apart on one host, which is what a SQLite store can serve anyway.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TrainingBusy("a training run is already in progress") from None
        try:
            yield Held()
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
