"""Copy what one store holds into another, empty one (`python -m training migrate-store`).

Backends dump and restore rows as plain tuples, in the column order below, with JSON
columns as JSON text; so any backend copies into any other, ids and history included.
Heartbeats are not copied: live workers send a new one within seconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

COLUMNS: dict[str, tuple[str, ...]] = {
    "samples": (
        "id", "client_id", "text", "text_key", "label", "split", "source", "prediction_id",
        "predicted_label", "adapter", "created_at", "superseded_by",
    ),
    "training_runs": (
        "id", "trigger", "state", "reason", "started_at", "finished_at", "parent", "candidate",
        "data_cursor", "train_samples", "validation_samples", "report",
    ),
    # In logging order (oldest first), which pruning by count relies on.
    "predictions": ("id", "text", "text_key", "label", "score", "adapter", "created_at", "top"),
}  # fmt: skip
JSON_COLUMNS = frozenset({"report", "top"})


class RowStore(Protocol):
    """The dump/restore primitive every backend provides."""

    def dump_rows(self, table: str) -> Iterator[tuple]:
        """Every row of `table` in COLUMNS order, oldest first."""

    def restore_rows(self, table: str, rows: Iterable[tuple]) -> int:
        """Insert dumped rows, ids kept, in one transaction, and move the table's id
        sequence past them; returns how many were inserted."""

    def label_set_version(self) -> int:
        """The label set's version (store/labels.py): 0 while it holds none."""

    def label_set(self):
        """The whole label set, to copy."""

    def restore_label_set(self, label_set) -> int:
        """Copy a label set, version and all, into this store's empty one."""


def copy_store(source: RowStore, target: RowStore) -> dict[str, int]:
    """Copy samples (ids, splits, superseded_by, created_at), training runs (ids, reports)
    and the prediction log into an empty `target`; returns the rows copied per table.

    Stop the service and the trainer first: rows written to `source` during the copy may
    be missed. Each table is copied in one transaction; if one fails, empty the target
    (drop and recreate the database) before trying again.
    """
    if source is target:
        raise ValueError("source and target are the same store")
    holding = [table for table in COLUMNS if next(iter(target.dump_rows(table)), None)]
    if target.label_set_version():
        holding.append("labels")
    if holding:
        raise ValueError(
            f"the target store is not empty ({', '.join(holding)} already hold rows):"
            " copy into a new, empty database"
        )
    copied = {table: target.restore_rows(table, source.dump_rows(table)) for table in COLUMNS}
    copied["labels"] = target.restore_label_set(source.label_set())
    return copied
