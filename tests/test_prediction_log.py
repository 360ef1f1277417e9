"""The prediction log's writer: /predict never waits on it, and a store that is down
costs only the remembered predictions, each one counted."""

from __future__ import annotations

import threading

from prometheus_client import REGISTRY

from service.prediction_log import PredictionLog
from training.store import PredictionRecord, SQLiteFeedbackStore, StoreUnavailable


def dropped() -> float:
    return REGISTRY.get_sample_value("livetune_prediction_log_dropped_total") or 0.0


def record(i: int) -> PredictionRecord:
    return PredictionRecord(f"p{i}", f"text {i}", "a", 0.9, "base", top=(("a", 0.9),))


class Down:
    """A prediction store whose database is unreachable, and that says when it was asked."""

    def __init__(self):
        self.asked = threading.Event()

    def log_predictions(self, records):
        self.asked.set()
        raise StoreUnavailable("cannot reach the database")


def test_a_store_that_is_down_drops_and_counts_the_predictions():
    store, before = Down(), dropped()
    log = PredictionLog(store)
    log.add([record(1), record(2), record(3)])
    assert log.flush(timeout=5)
    assert store.asked.is_set()
    assert dropped() == before + 3


def test_predictions_reach_a_real_store(tmp_path):
    store, before = SQLiteFeedbackStore(tmp_path), dropped()
    log = PredictionLog(store)
    log.add([record(1)])
    log.add([record(2)])
    assert log.flush(timeout=5)
    assert set(store.get_predictions(["p1", "p2"])) == {"p1", "p2"}
    assert dropped() == before
    store.close()
