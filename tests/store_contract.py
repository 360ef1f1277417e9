"""What every feedback store backend must do, whatever it stores its data in.

A backend's test module subclasses `StoreContract` as `Test<Backend>Store` and overrides
`open_store`: a picklable callable that opens a new store on the test's own, initially
empty data (so a second connection, or another process, sees the same data). Named
without the `test_` prefix so pytest collects it only through those subclasses.
"""

from __future__ import annotations

import json
import multiprocessing
import time
from dataclasses import asdict, replace

import pytest

from tests.label_contract import LabelContract
from training.split import split_for, text_key
from training.store import NewSample, PredictionRecord, RunState


def _write_many(open_store, worker: int, count: int) -> None:
    store = open_store()
    for i in range(count):
        store.add_samples(
            [NewSample(f"worker {worker} sample {i}", "x", client_id=f"{worker}-{i}")]
        )
    store.close()


def _write_overlapping(open_store, worker: int, count: int) -> None:
    """Batches that mix a text of this worker's own with texts every worker relabels."""
    store = open_store()
    for i in range(count):
        shared = NewSample(f"shared text {i % 7}", "ab"[(worker + i) % 2])
        store.add_samples([NewSample(f"worker {worker} own {i}", "x"), shared])
    store.close()


def _spawn(target, open_store, workers: int, count: int) -> list:
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=target, args=(open_store, w, count)) for w in range(workers)
    ]
    for process in processes:
        process.start()
    return processes


def _corrected(text: str, label: str, served: str) -> NewSample:
    return NewSample(text, label, prediction_id=f"p-{text}", predicted_label=served)


class StoreContract(LabelContract):
    @pytest.fixture
    def open_store(self):
        raise NotImplementedError("a backend's test class provides open_store")

    @pytest.fixture
    def store(self, open_store):
        store = open_store(validation_percent=20)
        yield store
        store.close()

    def start_run(self, store) -> int:
        return store.start_run(
            trigger="manual", parent="base", data_cursor=0, train_samples=1, validation_samples=0
        )

    def finished_run(self, store, state) -> int:
        run_id = self.start_run(store)
        store.finish_run(run_id, state=state, reason=None, candidate=None, report={})
        return run_id

    # Corrections: dedupe, supersede, split.

    def test_added_samples_are_readable_by_a_new_connection(self, store, open_store):
        result = store.add_samples([NewSample("my card is lost", "lost_card", source="agent-7")])
        assert result.duplicates == 0
        other = open_store()
        [sample] = other.samples()
        assert (sample.id, sample.text, sample.label, sample.source) == (
            result.ids[0],
            "my card is lost",
            "lost_card",
            "agent-7",
        )
        other.close()

    def test_replayed_client_id_is_not_stored_twice(self, store):
        first = store.add_samples([NewSample("a text", "x", client_id="req-1")])
        again = store.add_samples([NewSample("a text", "x", client_id="req-1")])
        assert again.ids == first.ids and again.duplicates == 1
        assert store.count_samples() == 1

    def test_replayed_client_id_returns_its_id_even_once_superseded(self, store):
        [first] = store.add_samples([NewSample("a text", "x", client_id="req-1")]).ids
        store.add_samples([NewSample("a text", "y")])
        replay = store.add_samples([NewSample("a text", "x", client_id="req-1")])
        assert (replay.ids, replay.new) == ([first], [False])
        assert [s.label for s in store.samples()] == ["y"]

    def test_same_text_same_label_is_a_duplicate_whatever_the_spacing_or_case(self, store):
        store.add_samples([NewSample("My card  is lost", "lost_card")])
        result = store.add_samples([NewSample("my card is lost ", "lost_card")])
        assert result.duplicates == 1 and store.count_samples() == 1

    def test_new_label_supersedes_and_history_is_kept(self, store):
        [old] = store.add_samples([NewSample("where is my card", "lost_card")]).ids
        [new] = store.add_samples([NewSample("where is my card", "card_arrival")]).ids
        assert [s.label for s in store.samples()] == ["card_arrival"]
        history = list(store.samples(include_superseded=True))
        assert [(s.id, s.superseded_by) for s in history] == [(old, new), (new, None)]

    def test_going_back_to_an_old_label_stores_it_again(self, store):
        first, second = store.add_samples([NewSample("t", "a"), NewSample("t", "b")]).ids
        [third] = store.add_samples([NewSample("t", "a")]).ids
        assert third not in (first, second)
        history = list(store.samples(include_superseded=True))
        assert [s.superseded_by for s in history] == [second, third, None]

    def test_a_batch_with_a_repeated_text_keeps_the_last_label(self, store):
        store.add_samples([NewSample("t", "a"), NewSample("t", "b")])
        assert [s.label for s in store.samples()] == ["b"]

    def test_add_result_says_which_samples_were_new(self, store):
        store.add_samples([NewSample("a b", "x", client_id="k1")])
        result = store.add_samples(
            [NewSample("c d", "y"), NewSample("other", "x", client_id="k1"), NewSample("a b", "x")]
        )
        assert result.new == [True, False, False]
        assert result.duplicates == 2

    def test_a_failing_batch_stores_nothing(self, store):
        store.add_samples([NewSample("kept", "x")])
        # text=None fails in the middle of the batch, after "first" was written.
        batch = [NewSample("first", "x"), NewSample(None, "x"), NewSample("third", "x")]
        with pytest.raises(TypeError):
            store.add_samples(batch)
        assert [s.text for s in store.samples(include_superseded=True)] == ["kept"]
        assert store.add_samples([NewSample("first", "x")]).new == [True]

    def test_split_is_deterministic_and_near_the_configured_share(self, store):
        texts = [f"text number {i}" for i in range(2000)]
        store.add_samples([NewSample(t, "x") for t in texts])
        validation = {s.text for s in store.samples(split="validation")}
        assert 0.17 < len(validation) / len(texts) < 0.23
        for text in texts[:50]:
            expected = split_for(text_key(text), 20)
            assert (text in validation) == (expected == "validation")
        assert not validation & {s.text for s in store.samples(split="train")}

    def test_a_relabeled_text_keeps_its_split(self, store):
        texts = [f"text number {i}" for i in range(50)]
        store.add_samples([NewSample(t, "x") for t in texts])
        store.add_samples([NewSample(t, "y") for t in texts])
        history = list(store.samples(include_superseded=True))
        assert {s.text: s.split for s in history[:50]} == {s.text: s.split for s in history[50:]}

    # The training cursor.

    def test_count_after_cursor(self, store):
        ids = store.add_samples([NewSample(f"t{i}", "x") for i in range(5)]).ids
        assert store.count_samples(after_id=ids[2]) == 2

    def test_cursor_views_skip_superseded_samples(self, store):
        assert (store.max_sample_id(), store.oldest_sample_time()) == (0, None)
        before = time.time()
        first, second = store.add_samples([NewSample("a", "x"), NewSample("b", "x")]).ids
        [relabeled] = store.add_samples([NewSample("a", "y")]).ids
        assert store.max_sample_id() == relabeled
        assert store.count_samples() == 2 and store.count_samples(after_id=relabeled) == 0
        assert before <= store.oldest_sample_time() <= time.time()
        assert store.oldest_sample_time(after_id=relabeled) is None
        assert [s.id for s in store.samples(after_id=first)] == [second, relabeled]

    def test_agreement_over_the_most_recent_linked_corrections(self, store):
        store.add_samples([_corrected("one", "a", "b"), _corrected("two", "a", "b")])
        store.add_samples([NewSample("not linked", "a")])
        store.add_samples([_corrected("three", "a", "a"), _corrected("four", "b", "b")])
        assert store.agreement(window=100) == (2, 4)
        assert store.agreement(window=2) == (2, 2)  # the newest two, both agreed
        assert store.agreement(window=3) == (2, 3)

    def test_concurrent_writer_processes_lose_nothing(self, open_store):
        workers = _spawn(_write_many, open_store, 4, 100)
        for process in workers:
            process.join(120)
            assert process.exitcode == 0
        store = open_store()
        assert store.count_samples() == 400
        store.close()

    def test_concurrent_writers_commit_ids_in_order_and_never_duplicate(self, open_store):
        # The trainer's cursor is max(id): an id committed below a cursor already seen
        # would never be trained on. So every snapshot taken while writers race must stay
        # exactly the set of ids up to its max, whatever commits afterwards.
        workers = _spawn(_write_overlapping, open_store, 4, 40)
        store = open_store()
        snapshots = []
        while any(process.is_alive() for process in workers):
            snapshots.append([s.id for s in store.samples(include_superseded=True)])
            time.sleep(0.005)
        for process in workers:
            process.join(120)
            assert process.exitcode == 0
        final = [s.id for s in store.samples(include_superseded=True)]
        assert len(snapshots) > 1
        for seen in snapshots:
            assert [i for i in final if i <= max(seen, default=0)] == seen
        active = [text_key(s.text) for s in store.samples()]
        assert len(active) == len(set(active)) == 4 * 40 + 7  # one active answer per text
        store.close()

    def test_an_empty_batch_stores_nothing(self, store):
        result = store.add_samples([])
        assert (result.ids, result.new) == ([], [])
        assert store.max_sample_id() == 0

    def test_texts_and_fields_round_trip_exactly(self, store):
        text = 'Mon  "carte"\n perdue 💳 — ça?'
        sample = NewSample(text, "lost_card", source="src", client_id="c", prediction_id="p",
                           predicted_label="other", adapter="v0003")  # fmt: skip
        [sample_id] = store.add_samples([sample]).ids
        [stored] = store.samples()
        assert (stored.id, stored.text, stored.label, stored.split) == (
            sample_id,
            text,
            "lost_card",
            split_for(text_key(text), 20),
        )
        assert (stored.source, stored.client_id, stored.prediction_id) == ("src", "c", "p")
        assert (stored.predicted_label, stored.adapter, stored.superseded_by) == (
            "other",
            "v0003",
            None,
        )

    # The prediction log.

    def test_predictions_are_found_by_id_and_by_text(self, store):
        top = (("greet", 0.9), ("bye", 0.1))
        record = PredictionRecord("p1", "Hello there", "greet", 0.9, "base", top=top)
        store.log_predictions([record])
        found = store.get_predictions(["p1", "nope"])
        assert set(found) == {"p1"}
        assert (found["p1"].label, found["p1"].top) == ("greet", top)
        assert store.latest_prediction_for_text(["hello   there"])["hello   there"].id == "p1"

    def test_the_latest_prediction_of_a_text_wins(self, store):
        now = time.time()
        store.log_predictions(
            [
                PredictionRecord("new", "Hi", "greet", 0.8, "v2", created_at=now - 1),
                PredictionRecord("old", "hi", "bye", 0.6, "v1", created_at=now - 10),
            ]
        )
        assert store.latest_prediction_for_text(["HI", "unseen"]) == {
            "HI": store.get_predictions(["new"])["new"]
        }

    def test_prediction_retention_by_count_and_age(self, open_store):
        store = open_store(prediction_max_count=3, prediction_max_age_s=60)
        old = time.time() - 120
        store.log_predictions([PredictionRecord("old", "t", "x", 0.5, "base", created_at=old)])
        assert store.get_predictions(["old"]) == {}  # expired even before pruning
        store.log_predictions([PredictionRecord(f"p{i}", "t", "x", 0.5, "base") for i in range(5)])
        store.prune_predictions()
        kept = store.get_predictions([f"p{i}" for i in range(5)] + ["old"])
        assert set(kept) == {"p2", "p3", "p4"}
        store.close()

    def test_logging_a_prediction_id_again_replaces_it(self, store):
        store.log_predictions([PredictionRecord("p1", "first", "a", 0.5, "v1")])
        store.log_predictions([PredictionRecord("p1", "second", "b", 0.7, "v2")])
        found = store.get_predictions(["p1"])["p1"]
        assert (found.text, found.label, found.score, found.adapter) == ("second", "b", 0.7, "v2")
        assert store.latest_prediction_for_text(["first"]) == {}

    def test_many_predictions_are_found_in_one_call(self, store):
        created = time.time() - 0.123456789
        records = [
            PredictionRecord(f"p{i}", f"text {i}", "x", i / 1000, "base", created_at=created)
            for i in range(1200)
        ]
        store.log_predictions(records)
        found = store.get_predictions([r.id for r in records])
        assert found == {r.id: r for r in records}  # floats and times exactly as logged

    # Worker heartbeats.

    def test_a_heartbeat_is_listed_and_the_next_replaces_it(self, store):
        assert store.workers() == []
        store.heartbeat("host-b:7", "host-b", 7, {"adapter": "v1"})
        state = {"adapter": "v2", "swaps": 3, "last_error": None, "labels": ["a", "ü"]}
        store.heartbeat("host-b:7", "host-b", 7, state)
        store.heartbeat("host-a:9", "host-a", 9, {})
        first, second = store.workers()
        assert (first.worker_id, first.host, first.pid, first.state) == (
            "host-a:9",
            "host-a",
            9,
            {},
        )
        assert (second.worker_id, second.state) == ("host-b:7", state)
        assert abs(second.last_seen - time.time()) < 5  # the store's clock, near this host's

    def test_workers_seen_within_leaves_out_stale_ones(self, store):
        store.heartbeat("stale:1", "stale", 1, {})
        time.sleep(1.0)
        store.heartbeat("fresh:2", "fresh", 2, {})
        assert [w.worker_id for w in store.workers(seen_within_s=0.5)] == ["fresh:2"]
        assert [w.worker_id for w in store.workers()] == ["fresh:2", "stale:1"]

    def test_a_forgotten_worker_is_no_longer_listed(self, store, open_store):
        store.heartbeat("w:1", "w", 1, {})
        store.heartbeat("w:2", "w", 2, {})
        store.forget_worker("w:1")
        store.forget_worker("never-seen")
        other = open_store()
        assert [w.worker_id for w in other.workers()] == ["w:2"]
        other.close()

    # Training runs.

    def test_a_run_report_round_trips_as_json(self, store):
        run_id = self.start_run(store)
        report = {"f1": 0.912345678901, "labels": ["ça", "b"], "nested": {"n": 3, "x": None}}
        store.finish_run(run_id, state="promoted", reason="ok", candidate="v1", report=report)
        assert store.last_run().report == report

    def test_runs_filtered_by_state(self, store):
        promoted = self.finished_run(store, "promoted")
        rejected = self.finished_run(store, "rejected")
        failed = self.finished_run(store, "failed")
        assert [r.id for r in store.runs(states=("promoted", "rejected"))] == [rejected, promoted]
        assert [r.id for r in store.runs(limit=1, states=("promoted",))] == [promoted]
        assert [r.id for r in store.runs()] == [failed, rejected, promoted]
        assert store.runs(states=("running",)) == []

    def test_a_run_is_recorded_from_start_to_finish(self, store):
        assert store.last_run() is None
        run_id = store.start_run(
            trigger="samples", parent="base", data_cursor=7, train_samples=5, validation_samples=2
        )
        running = store.last_run()
        assert (running.id, running.state, running.finished_at) == (run_id, "running", None)
        assert (running.parent, running.data_cursor, running.report) == ("base", 7, {})
        store.finish_run(
            run_id, state=RunState.PROMOTED, reason="better", candidate="v1", report={"f1": 0.9}
        )
        done = store.last_run()
        assert (done.state, done.reason, done.candidate) == ("promoted", "better", "v1")
        assert done.report == {"f1": 0.9} and done.started_at <= done.finished_at

    @pytest.mark.parametrize("written", [RunState.REJECTED, "rejected"])
    def test_run_state_round_trips_as_an_enum_equal_to_its_string(self, store, written):
        self.finished_run(store, written)
        [run] = store.runs(states=(RunState.REJECTED,))
        assert run.state is RunState.REJECTED and run.state == "rejected"
        assert store.runs(states=("rejected",)) == [run]
        assert json.loads(json.dumps(asdict(run)))["state"] == "rejected"
        assert (str(run.state), f"{run.state}") == ("rejected", "rejected")

    def test_an_unknown_run_state_is_refused(self, store):
        run_id = self.start_run(store)
        with pytest.raises(ValueError, match="'finished'"):
            store.finish_run(run_id, state="finished", reason=None, candidate=None, report={})
        assert store.last_run().state is RunState.RUNNING

    def test_interrupted_runs_are_marked_failed(self, store):
        finished = self.finished_run(store, RunState.PROMOTED)
        interrupted = self.start_run(store)
        assert store.fail_interrupted_runs("process died") == 1
        runs = {run.id: run for run in store.runs()}
        assert (runs[interrupted].state, runs[interrupted].reason) == ("failed", "process died")
        assert runs[interrupted].finished_at is not None
        assert runs[finished].state is RunState.PROMOTED
        assert store.fail_interrupted_runs("again") == 0

    # The review queue (training/store/review.py), in the same database.
    @pytest.fixture
    def queue(self, store):
        from training.store.review import open_review_store

        queue = open_review_store(store, max_age_s=3600)
        yield queue
        queue.close()

    def served(self, store, *texts: str, adapter: str = "base") -> None:
        """One served prediction per text, in order, a second apart."""
        now = time.time()
        store.log_predictions(
            [
                PredictionRecord(f"p-{i}-{text}", text, "x", 0.6, adapter,
                                 created_at=now - len(texts) + i, top=(("x", 0.6), ("y", 0.3)))
                for i, text in enumerate(texts)
            ]
        )  # fmt: skip

    def test_review_candidates_are_open_texts_newest_first_one_per_text(self, store, queue):
        self.served(store, "alpha", "beta", "Alpha ", "gamma", "delta")
        store.add_samples([NewSample("gamma", "x"), _corrected("delta", "y", "x")])
        found = queue.candidates(pool=100, label_count=3)
        # "Alpha " is alpha's newest prediction; labeled texts are gone, by text or by id.
        assert [(c.text, c.prediction_id) for c in found] == [
            ("Alpha ", "p-2-Alpha "),
            ("beta", "p-1-beta"),
        ]
        [alpha, _] = found
        assert alpha.adapter == "base" and alpha.top == (("x", 0.6), ("y", 0.3))
        assert alpha.margin == pytest.approx(0.3)  # from the served top, until re-scored

    def test_self_training_reads_the_open_texts_of_the_log_and_closes_what_it_opened(self, store):
        from training.self_training import open_texts

        self.served(store, "alpha", "beta", "gamma", "alpha")
        store.add_samples([NewSample("gamma", "x")])  # corrected: its correction wins
        found = open_texts(store, pool=100, max_age_s=3600)
        assert found == [("alpha", text_key("alpha")), ("beta", text_key("beta"))]
        assert open_texts(store, pool=1, max_age_s=3600) == [("alpha", text_key("alpha"))]
        store.add_samples([NewSample("beta", "y")])  # the store stays usable after
        assert open_texts(store, pool=100, max_age_s=3600) == [("alpha", text_key("alpha"))]

    def test_review_pool_is_the_newest_predictions(self, store, queue):
        self.served(store, "one", "two", "three")
        assert [c.text for c in queue.candidates(pool=2, label_count=3)] == ["three", "two"]

    def test_review_scores_are_kept_per_text(self, store, queue):
        self.served(store, "alpha", "beta")
        [beta, alpha] = queue.candidates(pool=10, label_count=3)
        rescored = replace(alpha, adapter="v1", top=(("y", 0.5), ("x", 0.45)),
                                       margin=0.05, entropy=0.7)  # fmt: skip
        queue.save_scores([rescored])
        found = {c.text: c for c in queue.candidates(pool=10, label_count=3)}
        assert (found["alpha"].adapter, found["alpha"].top) == ("v1", (("y", 0.5), ("x", 0.45)))
        assert (found["alpha"].margin, found["alpha"].entropy) == (0.05, 0.7)
        assert found["beta"].adapter == "base"
        self.served(store, "alpha")  # served again: the text's re-score still holds
        assert {c.text: c.adapter for c in queue.candidates(pool=10, label_count=3)} == {
            "alpha": "v1", "beta": "base",
        }  # fmt: skip

    def test_a_lease_keeps_a_text_from_every_other_call_until_it_expires(self, store, queue):
        self.served(store, "alpha", "beta", "gamma")
        pool = queue.candidates(pool=10, label_count=3, now=1_000.0)
        first = queue.lease(pool, 2, "ann", 60, now=1_000.0)
        assert [c.text for c in first] == ["gamma", "beta"]
        # A reviewer who ranked the same pool a moment before gets only what is left.
        assert [c.text for c in queue.lease(pool, 3, "bob", 60, now=1_001.0)] == ["alpha"]
        assert queue.candidates(pool=10, label_count=3, now=1_002.0) == []
        assert queue.lease(pool, 3, "ann", 60, now=1_059.0) == []  # the same reviewer too
        expired = queue.candidates(pool=10, label_count=3, now=1_061.0)
        assert {c.text for c in expired} == {"alpha", "beta", "gamma"}
        assert [c.text for c in queue.lease(expired, 1, "cid", 60, now=1_061.0)] == ["gamma"]

    def test_review_counts(self, store, queue):
        self.served(store, "alpha", "beta", "gamma", "delta")
        queue.lease(queue.candidates(pool=10, label_count=3), 2, "ann", 300)  # delta, gamma
        store.add_samples([_corrected("delta", "y", "x"), NewSample("elsewhere", "x")])
        counts = queue.counts(pool=10)
        # alpha and beta are open; gamma is leased; delta was labeled from the queue.
        assert (counts.depth, counts.labeled_from_queue, counts.labeled_elsewhere) == (2, 1, 1)
