"""The SQLite feedback store on a real file."""

from __future__ import annotations

import multiprocessing
import sqlite3
import time

import pytest

from training.split import normalise, split_for, text_key
from training.store import NewSample, PredictionRecord, SQLiteFeedbackStore


@pytest.fixture
def store(tmp_path):
    store = SQLiteFeedbackStore(tmp_path, validation_percent=20)
    yield store
    store.close()


def test_database_is_in_wal_mode_with_full_sync(store, tmp_path):
    db = sqlite3.connect(tmp_path / "feedback.sqlite3")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._samples.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_added_samples_are_readable_by_a_new_connection(store, tmp_path):
    result = store.add_samples([NewSample("my card is lost", "lost_card", source="agent-7")])
    assert result.duplicates == 0
    other = SQLiteFeedbackStore(tmp_path)
    [sample] = other.samples()
    assert (sample.id, sample.text, sample.label, sample.source) == (
        result.ids[0],
        "my card is lost",
        "lost_card",
        "agent-7",
    )
    other.close()


def test_replayed_client_id_is_not_stored_twice(store):
    first = store.add_samples([NewSample("a text", "x", client_id="req-1")])
    again = store.add_samples([NewSample("a text", "x", client_id="req-1")])
    assert again.ids == first.ids and again.duplicates == 1
    assert store.count_samples() == 1


def test_same_text_same_label_is_a_duplicate_whatever_the_spacing_or_case(store):
    store.add_samples([NewSample("My card  is lost", "lost_card")])
    result = store.add_samples([NewSample("my card is lost ", "lost_card")])
    assert result.duplicates == 1 and store.count_samples() == 1


def test_new_label_supersedes_and_history_is_kept(store):
    [old] = store.add_samples([NewSample("where is my card", "lost_card")]).ids
    [new] = store.add_samples([NewSample("where is my card", "card_arrival")]).ids
    assert [s.label for s in store.samples()] == ["card_arrival"]
    history = list(store.samples(include_superseded=True))
    assert [(s.id, s.superseded_by) for s in history] == [(old, new), (new, None)]


def test_a_batch_with_a_repeated_text_keeps_the_last_label(store):
    store.add_samples([NewSample("t", "a"), NewSample("t", "b")])
    assert [s.label for s in store.samples()] == ["b"]


def test_split_is_deterministic_and_near_the_configured_share(store):
    texts = [f"text number {i}" for i in range(2000)]
    store.add_samples([NewSample(t, "x") for t in texts])
    validation = {s.text for s in store.samples(split="validation")}
    assert 0.17 < len(validation) / len(texts) < 0.23
    for text in texts[:50]:
        expected = split_for(text_key(text), 20)
        assert (text in validation) == (expected == "validation")
    assert not validation & {s.text for s in store.samples(split="train")}


@pytest.mark.parametrize(
    ("a", "b"),
    [("Hello  World", "hello world"), ("ｃａｒｄ", "card"), ("\tx\n", "x")],
)
def test_normalisation_merges_trivial_variants(a, b):
    assert normalise(a) == normalise(b)


def test_count_after_cursor(store):
    ids = store.add_samples([NewSample(f"t{i}", "x") for i in range(5)]).ids
    assert store.count_samples(after_id=ids[2]) == 2


def test_predictions_are_found_by_id_and_by_text(store):
    top = (("greet", 0.9), ("bye", 0.1))
    store.log_predictions([PredictionRecord("p1", "Hello there", "greet", 0.9, "base", top=top)])
    found = store.get_predictions(["p1", "nope"])
    assert set(found) == {"p1"}
    assert (found["p1"].label, found["p1"].top) == ("greet", top)
    assert store.latest_prediction_for_text(["hello   there"])["hello   there"].id == "p1"


def test_prediction_retention_by_count_and_age(tmp_path):
    store = SQLiteFeedbackStore(tmp_path, prediction_max_count=3, prediction_max_age_s=60)
    old = time.time() - 120
    store.log_predictions([PredictionRecord("old", "t", "x", 0.5, "base", created_at=old)])
    assert store.get_predictions(["old"]) == {}  # expired even before pruning
    store.log_predictions([PredictionRecord(f"p{i}", "t", "x", 0.5, "base") for i in range(5)])
    store.prune_predictions()
    assert set(store.get_predictions([f"p{i}" for i in range(5)] + ["old"])) == {"p2", "p3", "p4"}
    store.close()


def _write_many(data_dir: str, worker: int, count: int) -> None:
    store = SQLiteFeedbackStore(data_dir)
    for i in range(count):
        store.add_samples(
            [NewSample(f"worker {worker} sample {i}", "x", client_id=f"{worker}-{i}")]
        )
    store.close()


def test_concurrent_writer_processes_lose_nothing(tmp_path):
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_write_many, args=(str(tmp_path), w, 100)) for w in range(4)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(120)
        assert process.exitcode == 0
    store = SQLiteFeedbackStore(tmp_path)
    assert store.count_samples() == 400
    store.close()


def test_add_result_says_which_samples_were_new(store):
    store.add_samples([NewSample("a b", "x", client_id="k1")])
    result = store.add_samples(
        [NewSample("c d", "y"), NewSample("other", "x", client_id="k1"), NewSample("a b", "x")]
    )
    assert result.new == [True, False, False]
    assert result.duplicates == 2


def test_agreement_over_the_most_recent_linked_corrections(store):
    def corrected(text, label, served):
        return NewSample(text, label, prediction_id=f"p-{text}", predicted_label=served)

    store.add_samples([corrected("one", "a", "b"), corrected("two", "a", "b")])
    store.add_samples([NewSample("not linked", "a")])
    store.add_samples([corrected("three", "a", "a"), corrected("four", "b", "b")])
    assert store.agreement(window=100) == (2, 4)
    assert store.agreement(window=2) == (2, 2)  # the newest two, both agreed
    assert store.agreement(window=3) == (2, 3)


def test_runs_filtered_by_state(store):
    def run(state):
        run_id = store.start_run(
            trigger="manual", parent="base", data_cursor=0, train_samples=1, validation_samples=0
        )
        store.finish_run(run_id, state=state, reason=None, candidate=None, report={})
        return run_id

    promoted, rejected, failed = run("promoted"), run("rejected"), run("failed")
    assert [r.id for r in store.runs(states=("promoted", "rejected"))] == [rejected, promoted]
    assert [r.id for r in store.runs(limit=1, states=("promoted",))] == [promoted]
    assert [r.id for r in store.runs()] == [failed, rejected, promoted]
    assert store.runs(states=("running",)) == []
