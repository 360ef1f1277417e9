"""What every store backend must do with the run-time label set (training/store/labels.py).

Mixed into `StoreContract`, so it runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import threading

import pytest

from training.labels import Label
from training.store import NewSample
from training.store.labels import LabelError, LabelExists, LabelRetired, TooFewLabels, UnknownLabel

SEED = [Label("lost_card", "my card is gone"), Label("refund"), Label("exchange_rate")]


class LabelContract:
    def seeded(self, store):
        return store.seed_labels(SEED, now=100.0).label_set

    def test_an_empty_store_has_version_0_and_no_labels(self, store):
        assert store.label_set_version() == 0
        assert store.label_set().records == ()

    def test_the_first_start_stores_the_configured_labels_in_order(self, store, open_store):
        result = store.seed_labels(SEED, now=100.0)
        assert result.added == ["lost_card", "refund", "exchange_rate"]
        assert (result.kept, result.retired, result.described) == ([], [], [])
        other = open_store()  # durable, and seen by another connection
        label_set = other.label_set()
        other.close()
        assert label_set.version == 1
        assert label_set.active() == SEED
        assert [r.position for r in label_set.records] == [1, 2, 3]
        assert {r.added_at for r in label_set.records} == {100.0}

    def test_a_later_start_adds_what_the_store_lacks_and_keeps_what_config_lacks(self, store):
        self.seeded(store)
        store.retire_label("refund", now=101.0)
        configured = [Label("lost_card", "another text"), Label("refund"), Label("new_one")]
        result = store.seed_labels(configured, now=102.0)
        assert result.added == ["new_one"]
        assert result.kept == ["exchange_rate"]  # never retired by a config edit
        assert result.retired == ["refund"]  # stays retired
        assert result.described == ["lost_card"]  # the stored description wins
        label_set = result.label_set
        assert label_set.names() == ["lost_card", "exchange_rate", "new_one"]
        assert label_set.get("lost_card").description == "my card is gone"
        assert label_set.version == 3  # seed, retire, this seed
        assert store.seed_labels(configured, now=103.0).label_set.version == 3  # nothing new

    def test_add_describe_retire_each_bump_the_version_once(self, store):
        self.seeded(store)
        after_add = store.add_label("card_arrival", "where is my new card", now=110.0)
        assert after_add.version == 2 and after_add.names()[-1] == "card_arrival"
        record = after_add.get("card_arrival")
        assert (record.state, record.position, record.added_at) == ("active", 4, 110.0)
        after_describe = store.describe_label("card_arrival", "  my card has not come  ", now=111.0)
        assert after_describe.version == 3
        assert after_describe.get("card_arrival").description == "my card has not come"
        assert store.describe_label("card_arrival", "my card has not come", now=112.0).version == 3
        after_retire = store.retire_label("card_arrival", now=113.0)
        retired = after_retire.get("card_arrival")
        assert after_retire.version == 4 and "card_arrival" not in after_retire.names()
        assert (retired.state, retired.retired_at) == ("retired", 113.0)
        assert store.retire_label("card_arrival", now=114.0).version == 4  # already retired
        assert store.label_set_version() == 4

    @pytest.mark.parametrize(
        ("change", "error", "field"),
        [
            (lambda s: s.add_label("refund", "", now=1.0), LabelExists, "name"),
            (lambda s: s.add_label(" padded", "", now=1.0), LabelError, "name"),
            (lambda s: s.add_label("x" * 129, "", now=1.0), LabelError, "name"),
            (lambda s: s.add_label("ok", "a\nb", now=1.0), LabelError, "description"),
            (lambda s: s.add_label("ok", "x" * 501, now=1.0), LabelError, "description"),
            (lambda s: s.describe_label("nope", "text", now=1.0), UnknownLabel, "name"),
            (lambda s: s.retire_label("nope", now=1.0), UnknownLabel, "name"),
        ],
    )
    def test_a_refused_change_changes_nothing(self, store, change, error, field):
        before = self.seeded(store)
        with pytest.raises(error) as refused:
            change(store)
        assert refused.value.field == field
        assert store.label_set() == before

    def test_a_retired_label_cannot_be_added_again_nor_described(self, store):
        self.seeded(store)
        store.retire_label("refund", now=1.0)
        with pytest.raises(LabelExists, match="retired"):
            store.add_label("refund", "", now=2.0)
        with pytest.raises(LabelRetired):
            store.describe_label("refund", "new text", now=2.0)

    def test_two_labels_always_stay_active(self, store):
        self.seeded(store)
        store.retire_label("refund", now=1.0)
        with pytest.raises(TooFewLabels):
            store.retire_label("lost_card", now=2.0)
        assert store.label_set().names() == ["lost_card", "exchange_rate"]

    def test_concurrent_adds_all_land_with_one_version_each(self, store, open_store):
        self.seeded(store)
        stores = [open_store() for _ in range(4)]
        errors = []

        def add(i: int, other) -> None:
            try:
                for j in range(5):
                    other.add_label(f"label_{i}_{j}", "", now=1.0)
            except Exception as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=add, args=(i, s)) for i, s in enumerate(stores)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for other in stores:
            other.close()
        assert errors == []
        label_set = store.label_set()
        assert label_set.version == 1 + 20 and len(label_set.names()) == 3 + 20
        positions = [r.position for r in label_set.records]
        assert positions == sorted(set(positions))

    def test_corrections_are_counted_per_label(self, store):
        self.seeded(store)
        store.add_samples([NewSample("a", "refund"), NewSample("b", "refund")])
        store.add_samples([NewSample("c", "lost_card"), NewSample("a", "lost_card")])  # relabel
        assert store.label_counts() == {"refund": 1, "lost_card": 2}
