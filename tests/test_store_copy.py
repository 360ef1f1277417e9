"""copy_store: everything a store holds, ids and history included, into an empty store of
any backend (`python -m training migrate-store`)."""

from __future__ import annotations

import time

import pytest

from training.labels import Label
from training.schedule import due, pending_samples, training_cursor
from training.store import NewSample, PredictionRecord, SQLiteFeedbackStore, copy_store

TABLES = ("samples", "training_runs", "predictions")


def seed(store) -> None:
    """History worth keeping: relabels, client ids, linked corrections, runs, predictions."""
    first = store.add_samples([NewSample(f"text {i}", "a", client_id=f"c{i}") for i in range(30)])
    store.add_samples([NewSample("text 3", "b"), NewSample("text 4", "b", predicted_label="a")])
    run = manual_run(store, data_cursor=max(first.ids))
    report = {"f1": 0.91, "labels": ["a", "b"], "timings": {"train_s": 1.5}}
    store.finish_run(run, state="promoted", reason="better", candidate="v1", report=report)
    store.finish_run(manual_run(store), state="failed", reason="boom", candidate=None, report={})
    store.add_samples([NewSample("text 3", "a"), NewSample("new one", "b")])
    top = (("a", 0.6), ("b", 0.4))
    store.log_predictions(
        [PredictionRecord(f"p{i}", f"text {i}", "a", 0.6, "v1", top=top) for i in range(5)]
    )
    store.seed_labels([Label("a"), Label("b", "about b"), Label("c")], now=1.0)
    store.retire_label("c", now=2.0)  # the set's version and states travel too


def manual_run(store, data_cursor: int = 0) -> int:
    return store.start_run(
        trigger="manual", parent="base", data_cursor=data_cursor, train_samples=0,
        validation_samples=0,
    )  # fmt: skip


def held(store) -> dict:
    """What a store holds, through the public interface."""
    return {
        "samples": list(store.samples(include_superseded=True)),
        "runs": store.runs(limit=100),
        "predictions": store.get_predictions([f"p{i}" for i in range(5)]),
        "cursor": (store.max_sample_id(), training_cursor(store), pending_samples(store)),
        "due": due(
            store,
            min_new_samples=3,
            first_samples=3,
            max_interval_s=3600,
            failure_backoff_s=0,
            now=1e10,
        ),
    }


def check_copied(source, target) -> None:
    counts = copy_store(source, target)
    assert counts == {"samples": 34, "training_runs": 2, "predictions": 5, "labels": 3}
    assert target.label_set() == source.label_set()
    assert held(target) == held(source)
    # New rows continue after the copied ids: a cursor already recorded stays meaningful.
    [new_id] = target.add_samples([NewSample("after the copy", "a")]).ids
    assert new_id == source.max_sample_id() + 1
    assert manual_run(target) == source.last_run().id + 1
    # Dedupe and supersede see the copied history.
    assert target.add_samples([NewSample("text 3", "a", client_id="c3")]).new == [False]


@pytest.fixture
def sqlite_stores(tmp_path):
    source = SQLiteFeedbackStore(tmp_path / "source")
    target = SQLiteFeedbackStore(tmp_path / "target")
    seed(source)
    yield source, target
    source.close()
    target.close()


def test_sqlite_to_sqlite_keeps_ids_history_runs_and_cursor(sqlite_stores):
    check_copied(*sqlite_stores)


def test_a_non_empty_target_is_refused_untouched(sqlite_stores):
    source, target = sqlite_stores
    target.log_predictions([PredictionRecord("mine", "t", "a", 0.5, "base")])
    with pytest.raises(ValueError, match=r"not empty \(predictions already hold rows\)"):
        copy_store(source, target)
    assert target.max_sample_id() == 0 and target.runs() == []
    with pytest.raises(ValueError, match="same store"):
        copy_store(source, source)


def test_the_prediction_log_keeps_its_order_for_pruning_by_count(tmp_path):
    source = SQLiteFeedbackStore(tmp_path / "source", prediction_max_count=2)
    now = time.time()
    source.log_predictions([PredictionRecord(f"p{i}", "t", "a", 0.5, "base", created_at=now)
                            for i in range(4)])  # fmt: skip
    target = SQLiteFeedbackStore(tmp_path / "target", prediction_max_count=2)
    copy_store(source, target)
    target.prune_predictions()
    assert set(target.get_predictions([f"p{i}" for i in range(4)])) == {"p2", "p3"}
    source.close()
    target.close()


def test_sqlite_to_postgres_and_back(sqlite_stores, postgres_url, tmp_path):
    from training.store.postgres import PostgresStore

    source, _ = sqlite_stores
    postgres = PostgresStore(postgres_url)
    check_copied(source, postgres)
    back = SQLiteFeedbackStore(tmp_path / "back")
    copy_store(postgres, back)
    assert held(back) == held(postgres)
    postgres.close()
    back.close()
