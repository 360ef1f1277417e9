"""The label set in the store: every label ever added, active or retired, and a version.

The configured labels (LIVETUNE_LABELS / LIVETUNE_LABELS_FILE) only seed it: the first
start stores them; a later start adds configured labels the store lacks and keeps, with
a log line, the labels it has that the configuration lacks. Retiring is explicit (the
API), never a side effect of a config edit, and a retired label stays retired.

Every change bumps `version` in the same transaction, so a serving worker that polls the
version (one indexed row) knows when to re-read the set, and one batch is served by one
version. Labels are kept in the order they were added (`position`): the head's row order.
The SQL is standard, written once here for both backends (`%s` placeholders; SQLite's
via `queries.qmark`); each backend supplies the transaction.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

from training.labels import Label, check_description, check_name
from training.store.label_errors import (  # noqa: F401  (re-exported: callers import them here)
    LabelError,
    LabelExists,
    LabelRetired,
    TooFewLabels,
    UnknownLabel,
)

log = logging.getLogger(__name__)
ACTIVE, RETIRED = "active", "retired"
MIN_ACTIVE = 2  # a classifier needs two labels to choose between

LABEL_COLUMNS = "name, description, state, position, added_at, updated_at, retired_at"
SELECT_LABELS = f"SELECT {LABEL_COLUMNS} FROM labels ORDER BY position"
SELECT_VERSION = "SELECT version FROM label_set WHERE id = 1"
BUMP_VERSION = "UPDATE label_set SET version = version + 1 WHERE id = 1"
NEXT_POSITION = "SELECT coalesce(max(position), 0) + 1 FROM labels"
INSERT_LABEL = (
    "INSERT INTO labels (name, description, state, position, added_at, updated_at)"
    " VALUES (%s, %s, %s, %s, %s, %s)"
)
DESCRIBE = "UPDATE labels SET description = %s, updated_at = %s WHERE name = %s"
RETIRE = "UPDATE labels SET state = %s, updated_at = %s, retired_at = %s WHERE name = %s"
COUNTS = "SELECT label, count(*) FROM samples WHERE superseded_by IS NULL GROUP BY label"


@dataclass(frozen=True)
class LabelRecord:
    """One label as stored."""

    name: str
    description: str
    state: str  # ACTIVE or RETIRED
    position: int  # the order it was added in: its row in the head
    added_at: float
    updated_at: float
    retired_at: float | None = None

    @property
    def active(self) -> bool:
        return self.state == ACTIVE

    def label(self) -> Label:
        return Label(self.name, self.description)


@dataclass(frozen=True)
class LabelSet:
    """The whole set at one version."""

    version: int
    records: tuple[LabelRecord, ...] = ()
    _by_name: dict = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {r.name: r for r in self.records})

    def active(self) -> list[Label]:
        """The labels predicted now, in head order."""
        return [record.label() for record in self.records if record.active]

    def names(self) -> list[str]:
        return [record.name for record in self.records if record.active]

    def get(self, name: str) -> LabelRecord | None:
        return self._by_name.get(name)


@dataclass(frozen=True)
class SeedResult:
    label_set: LabelSet
    added: list[str]  # configured labels the store lacked, stored now
    kept: list[str]  # active stored labels the configuration lacks (kept, not retired)
    retired: list[str]  # configured labels the store holds as retired (they stay retired)
    described: list[str]  # configured labels whose description differs from the stored one


class LabelStore(abc.ABC):
    """The run-time label set, on the SQL below; a backend supplies `_rows` (reads) and
    `_label_transaction` (one serialised write transaction)."""

    @abc.abstractmethod
    def _rows(self, query: str, params: Sequence) -> list[tuple]:
        """Run a read (in `%s` style) and return its rows."""

    @abc.abstractmethod
    def _label_transaction(self) -> AbstractContextManager[LabelWriter]:
        """A write transaction that excludes every other label-set write until it ends."""

    def label_set(self) -> LabelSet:
        """Every label, active and retired, in head order, with the set's version."""
        # The version first: rows newer than it only cause one more read at the next poll,
        # while rows older than it would be kept as that version until the next change.
        version = self.label_set_version()
        return read_label_set(self._rows(SELECT_LABELS, ()), version)

    def label_set_version(self) -> int:
        """The set's version: 0 before it is seeded, then +1 per change. One cheap read."""
        return self._rows(SELECT_VERSION, ())[0][0]

    def label_counts(self) -> dict[str, int]:
        """Active (not superseded) corrections per label, retired labels included."""
        return dict(self._rows(COUNTS, ()))

    def change_labels(self, change: Callable[[LabelWriter, LabelSet], None]) -> LabelSet:
        """Run `change(writer, current set)` in one transaction, bumping the version once
        if it wrote anything; returns the set after it. A LabelError rolls it back."""
        with self._label_transaction() as writer:
            change(writer, writer.read())
            writer.finish()
            return writer.read()

    def seed_labels(self, configured: Sequence[Label], now: float) -> SeedResult:
        """Store the configured labels the set lacks (all of them on the first start)."""
        result: dict[str, list[str]] = {}

        def seed(writer: LabelWriter, current: LabelSet) -> None:
            names = {label.name for label in configured}
            new = [label for label in configured if current.get(label.name) is None]
            for label in new:
                writer.insert(label, now)
            result["added"] = [label.name for label in new]
            stored = current.records
            result["kept"] = [r.name for r in stored if r.active and r.name not in names]
            result["retired"] = [r.name for r in stored if not r.active and r.name in names]
            result["described"] = [
                label.name
                for label in configured
                if (r := current.get(label.name)) is not None and r.description != label.description
            ]

        label_set = self.change_labels(seed)
        return SeedResult(label_set, **result)

    def add_label(self, name: str, description: str, now: float) -> LabelSet:
        """A new active label; LabelExists if the name is taken, retired names included."""
        label = Label(
            _checked(check_name, name, "name"),
            _checked(check_description, description, "description"),
        )

        def add(writer: LabelWriter, current: LabelSet) -> None:
            found = current.get(label.name)
            if found is not None:
                state = "" if found.active else " (retired: its corrections and history stay)"
                raise LabelExists(f"label {label.name!r} already exists{state}")
            writer.insert(label, now)

        return self.change_labels(add)

    def describe_label(self, name: str, description: str, now: float) -> LabelSet:
        """A new description: the text a label not yet trained starts from zero-shot."""
        description = _checked(check_description, description, "description")

        def describe(writer: LabelWriter, current: LabelSet) -> None:
            found = _existing(current, name)
            if not found.active:
                raise LabelRetired(f"label {name!r} is retired; its description is kept as it was")
            if found.description != description:
                writer.describe(name, description, now)

        return self.change_labels(describe)

    def retire_label(self, name: str, now: float) -> LabelSet:
        """No longer predicted nor accepted in corrections; its corrections stay. Retiring a
        retired label changes nothing."""

        def retire(writer: LabelWriter, current: LabelSet) -> None:
            found = _existing(current, name)
            if not found.active:
                return
            if len(current.names()) <= MIN_ACTIVE:
                raise TooFewLabels(
                    f"cannot retire {name!r}: at least {MIN_ACTIVE} labels must stay active"
                )
            writer.retire(name, now)

        return self.change_labels(retire)

    def restore_label_set(self, label_set: LabelSet) -> int:
        """Copy another store's set, positions, times and version kept, into this empty one
        (`copy.copy_store`); returns how many labels were copied."""

        def restore(writer: LabelWriter, current: LabelSet) -> None:
            if current.version or current.records:
                raise LabelError("the target store already holds a label set")
            for record in label_set.records:
                writer.insert_record(record)
            writer.set_version(label_set.version)

        self.change_labels(restore)
        return len(label_set.records)


def _checked(check: Callable[[object], str], value: object, name: str) -> str:
    try:
        return check(value)
    except ValueError as exc:
        raise LabelError(str(exc), field=name) from None


def _existing(current: LabelSet, name: str) -> LabelRecord:
    found = current.get(name)
    if found is None:
        listed = ", ".join(current.names()[:50])
        raise UnknownLabel(f"unknown label {name!r}; labels: {listed}")
    return found


class LabelWriter:
    """The writes of one label-set transaction on a DB-API connection (`style` turns the
    `%s` placeholders into the driver's)."""

    def __init__(self, conn, style=lambda sql: sql):
        self.conn = conn
        self.style = style
        self.changed = False

    def _execute(self, sql: str, params: Sequence = ()):
        return self.conn.execute(self.style(sql), params)

    def read(self) -> LabelSet:
        """The set as this transaction sees it."""
        rows = self._execute(SELECT_LABELS).fetchall()
        return read_label_set(rows, self._execute(SELECT_VERSION).fetchone()[0])

    def insert(self, label: Label, now: float) -> None:
        position = self._execute(NEXT_POSITION).fetchone()[0]
        self._execute(INSERT_LABEL, (label.name, label.description, ACTIVE, position, now, now))
        self.changed = True

    def insert_record(self, record: LabelRecord) -> None:
        self._execute(
            f"INSERT INTO labels ({LABEL_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (record.name, record.description, record.state, record.position,
             record.added_at, record.updated_at, record.retired_at),
        )  # fmt: skip

    def set_version(self, version: int) -> None:
        self._execute("UPDATE label_set SET version = %s WHERE id = 1", (version,))

    def describe(self, name: str, description: str, now: float) -> None:
        self._execute(DESCRIBE, (description, now, name))
        self.changed = True

    def retire(self, name: str, now: float) -> None:
        self._execute(RETIRE, (RETIRED, now, now, name))
        self.changed = True

    def finish(self) -> None:
        """Bump the version once if anything changed; call last in the transaction."""
        if self.changed:
            self._execute(BUMP_VERSION)


def read_label_set(rows: Sequence[tuple], version: int) -> LabelSet:
    return LabelSet(version, tuple(LabelRecord(*row) for row in rows))


def log_seed(result: SeedResult, where: str) -> None:
    """Say what seeding found, once per process start."""
    if result.added:
        log.info("%s: added configured label(s) to the label set: %s", where, result.added)
    if result.kept:
        log.info(
            "%s: label(s) %s are in the label set but not in LIVETUNE_LABELS: kept (retire"
            " them with POST /labels/{name}/retire)", where, result.kept,
        )  # fmt: skip
    if result.retired:
        log.info("%s: configured label(s) %s are retired in the label set: they stay retired",
                 where, result.retired)  # fmt: skip
    if result.described:
        log.info(
            "%s: label(s) %s have another description in the label set than configured: the"
            " stored one is used (change it with PATCH /labels/{name})", where, result.described,
        )  # fmt: skip
