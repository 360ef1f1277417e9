"""The run lock: one training run at a time per store, released if its holder dies."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class TrainingBusy(RuntimeError):
    """Another training run holds the lock."""


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
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
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
