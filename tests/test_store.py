"""The store contract on SQLite (real files), and the backend-independent rules."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass

import pytest

from tests.store_contract import StoreContract
from training.split import normalise, text_key
from training.store import NewSample, RunState, SampleWriter, SQLiteFeedbackStore, policy


class TestSQLiteStore(StoreContract):
    @pytest.fixture
    def open_store(self, tmp_path):
        return functools.partial(SQLiteFeedbackStore, str(tmp_path))


@pytest.mark.parametrize(
    ("a", "b"),
    [("Hello  World", "hello world"), ("ｃａｒｄ", "card"), ("\tx\n", "x")],
)
def test_normalisation_merges_trivial_variants(a, b):
    assert normalise(a) == normalise(b)


@pytest.mark.parametrize("state", list(RunState))
def test_run_state_reads_as_its_plain_string(state):
    assert state == state.value and RunState(state.value) is state
    assert (str(state), f"{state}", f"{state:>9}") == (
        state.value,
        state.value,
        f"{state.value:>9}",
    )
    assert json.dumps({"state": state}) == json.dumps({"state": state.value})


@dataclass
class Row:
    id: int
    key: str
    label: str
    client_id: str | None
    superseded_by: int | None = None


class ListWriter(SampleWriter):
    """The four primitives over a list: all a backend needs to reuse the policy."""

    def __init__(self):
        self.rows: list[Row] = []

    def ids_for_client_ids(self, client_ids):
        return {r.client_id: r.id for r in self.rows if r.client_id in client_ids}

    def active_by_key(self, keys):
        found = {}
        for r in self.rows:
            if r.key in keys and r.superseded_by is None:
                found.setdefault(r.key, {})[r.label] = r.id
        return found

    def insert(self, sample, *, key, split, created_at):
        self.rows.append(Row(len(self.rows) + 1, key, sample.label, sample.client_id))
        return len(self.rows)

    def supersede_others(self, key, winner_id):
        for row in self.rows:
            if row.key == key and row.superseded_by is None and row.id != winner_id:
                row.superseded_by = winner_id


def test_the_policy_runs_on_any_backend_that_has_the_primitives():
    writer = ListWriter()
    add = functools.partial(policy.add_samples, writer, validation_percent=20, now=0.0)
    relabeled = [NewSample("Card lost", "a", client_id="c1"), NewSample("card  LOST", "b")]
    assert add(relabeled).ids == [1, 2]
    replay = add([NewSample("x", "a", client_id="c1"), NewSample("card lost", "b")])
    assert (replay.ids, replay.new) == ([1, 2], [False, False])
    key = text_key("card lost")
    assert [(r.key, r.superseded_by) for r in writer.rows] == [(key, 2), (key, None)]
