"""Hot-swap inside one worker: ServingModel follows CURRENT, refuses bad adapters, stays flat."""

from __future__ import annotations

import gc
import os
import threading
import time
from pathlib import Path

import psutil
import pytest
import torch
from peft.tuners.lora import LoraLayer

from service.labels import LabelCache
from service.swap import ServingModel
from service.watcher import Watcher, worker_states
from tests.conftest import TOY_LABELS
from tests.factories import TEXTS, publish_adapter, serving_model, zero_shot
from training.adapters import attach_lora, load_head
from training.labels import Label
from training.predictor import zero_shot_predictor
from training.registry import BASE, LocalRegistry
from training.store import SQLiteFeedbackStore
from training.store.labels import LabelRecord, LabelSet
from training.trainer import TrainConfig


def labels_of(names) -> list[Label]:
    return [Label(name) for name in names]


def reference(model_dir, registry: LocalRegistry, version: str) -> torch.Tensor:
    """Probabilities of a model built directly with `version`: what serving must match."""
    predictor = zero_shot(model_dir)
    path = registry.materialize(version)
    attach_lora(predictor.model, TrainConfig(), warm_start=path)
    load_head(predictor.model, TOY_LABELS, path)
    predictor.model.eval()
    return predictor.probabilities(TEXTS)


@pytest.fixture(params=[True, False], ids=["merged", "lora-per-forward"])
def setup(request, tmp_path, tiny_model_dir):
    """Every swap test runs with the adapter merged into the weights (the default) and with
    LoRA run per forward (LIVETUNE_MERGE_ADAPTER=false)."""
    registry = LocalRegistry(tmp_path / "adapters")
    predictor = zero_shot(tiny_model_dir)
    return serving_model(predictor, registry, str(tiny_model_dir), merge=request.param), registry


def scores(serving: ServingModel) -> tuple[torch.Tensor, str]:
    with serving.lock:
        return serving.predictor.probabilities(TEXTS), serving.version


def test_serving_follows_current_and_answers_like_the_adapter_itself(setup, tiny_model_dir):
    serving, registry = setup
    base_scores, _ = scores(serving)
    first = publish_adapter(registry, tiny_model_dir, seed=1)
    second = publish_adapter(registry, tiny_model_dir, seed=2)
    for version in (first, second, first):
        assert serving.follow(version)
        got, served = scores(serving)
        assert served == version
        assert torch.allclose(got, reference(tiny_model_dir, registry, version), atol=1e-5)
    assert serving.follow(None)
    got, served = scores(serving)
    assert served == BASE
    assert torch.allclose(got, base_scores, atol=1e-6)
    assert serving.state.swaps == 4 and serving.state.failed_swaps == 0
    assert len(serving.predictor.model.encoder.peft_config) == 2  # two slots, reused


def test_a_merged_adapter_leaves_the_base_weights_untouched(tmp_path, tiny_model_dir):
    """Merging writes new tensors only: the base weights come back bit for bit, and
    filling the spare slot changes nothing served (its LoRA never runs)."""
    registry = LocalRegistry(tmp_path / "adapters")
    serving = serving_model(zero_shot(tiny_model_dir), registry, str(tiny_model_dir))
    encoder = serving.predictor.model.encoder
    pristine = {name: tensor.clone() for name, tensor in encoder.state_dict().items()}
    first, second = (publish_adapter(registry, tiny_model_dir, seed=s) for s in (11, 12))
    assert serving.follow(first)
    served, _ = scores(serving)
    # The adapter's answers, with no LoRA layer running: its delta is in the weights.
    assert torch.allclose(served, reference(tiny_model_dir, registry, first), atol=1e-5)
    layers = [m for m in serving.predictor.model.encoder.modules() if isinstance(m, LoraLayer)]
    assert layers and all(layer.disable_adapters for layer in layers)
    serving._fill(serving.predictor.model.encoder, "slot-b", registry.materialize(second))
    assert torch.equal(scores(serving)[0], served)
    assert serving.follow(second) and serving.follow(None)
    base = serving.merged.base
    assert base and all(torch.equal(tensor, pristine[_state_key(name)])
                        for name, tensor in base.items())  # fmt: skip
    changed = serving.merged.merge(serving.predictor.model.encoder, "slot-a")
    assert any(not torch.equal(changed[name], base[name]) for name in base)


def _state_key(layer: str) -> str:
    """The plain encoder's state_dict key of a LoRA-wrapped layer's weight."""
    return layer.removeprefix("base_model.model.") + ".weight"


def test_adapters_of_different_shapes_swap_correctly(setup, tiny_model_dir):
    serving, registry = setup
    shapes = [TrainConfig(lora_layers=0), TrainConfig(lora_layers=1, lora_r=4), TrainConfig()]
    versions = [publish_adapter(registry, tiny_model_dir, seed=i, config=c) for i, c in
                enumerate(shapes)]  # fmt: skip
    for version in versions + versions[-2::-1]:
        assert serving.follow(version), serving.state.last_error
        got, served = scores(serving)
        assert served == version
        assert torch.allclose(got, reference(tiny_model_dir, registry, version), atol=1e-5)


def test_predict_reports_the_version_that_answered(setup, tiny_model_dir):
    serving, registry = setup
    version = publish_adapter(registry, tiny_model_dir, seed=3)
    predictions, served, label_set_version = serving.predict(TEXTS)
    assert served == BASE and len(predictions) == len(TEXTS) and label_set_version == 0
    serving.follow(version)
    assert serving.predict(TEXTS)[1] == version


@pytest.mark.parametrize("damage", ["garbage_weights", "garbage_head", "pickle_planted"])
def test_a_corrupt_adapter_is_refused_and_the_current_one_keeps_serving(
    setup, tiny_model_dir, damage
):
    serving, registry = setup
    good = publish_adapter(registry, tiny_model_dir, seed=4)
    serving.follow(good)
    before, _ = scores(serving)
    bad = publish_adapter(registry, tiny_model_dir, seed=5)
    folder = registry.root / bad
    if damage == "garbage_weights":
        (folder / "adapter_model.safetensors").write_bytes(b"\x00" * 64)
    elif damage == "garbage_head":
        (folder / "head.safetensors").write_bytes(b"not safetensors")
    else:
        (folder / "evil.pkl").write_bytes(b"cos\nsystem\n(S'echo owned'\ntR.")
    assert not serving.follow(bad)
    after, served = scores(serving)
    assert served == good
    assert torch.equal(after, before)
    assert serving.state.failed_swaps == 1
    assert bad in serving.state.last_error
    assert not serving.follow(bad)  # remembered: not retried on every poll
    assert serving.state.failed_swaps == 1


def test_an_adapter_for_another_base_model_is_refused(setup, tiny_model_dir, tmp_path):
    from tests.conftest import build_tiny_model

    serving, registry = setup
    other = build_tiny_model(tmp_path / "other-base", seed=7)
    version = publish_adapter(registry, other, seed=1)
    assert not serving.follow(version)
    assert serving.version == BASE
    assert "trained on base model" in serving.state.last_error


def test_the_watcher_follows_current_and_sends_heartbeats(
    setup, tiny_model_dir, tmp_path, monkeypatch
):
    monkeypatch.setattr("service.watcher.HEARTBEAT_S", 0.1)
    serving, registry = setup
    store = SQLiteFeedbackStore(tmp_path / "data")
    watcher = Watcher(serving, store, LabelCache(store, labels_of(TOY_LABELS)), poll_s=0.05)
    watcher.start()
    try:
        version = publish_adapter(registry, tiny_model_dir, seed=6)
        registry.activate(version)
        deadline = time.monotonic() + 5
        while serving.version != version:
            assert time.monotonic() < deadline, "the watcher never followed CURRENT"
            time.sleep(0.05)
        time.sleep(0.2)
        [state] = worker_states(store, stale_after_s=10)
        assert state["adapter"] == version and state["swaps"] == 1
        assert state["pid"] == os.getpid() and not state["stale"]
        time.sleep(0.3)
        [state] = worker_states(store, stale_after_s=0.1)
        assert not state["stale"], "an unchanged state is still re-sent as a heartbeat"
    finally:
        watcher.stop()
        store.close()


def test_memory_stays_flat_over_500_swaps(tmp_path):
    """On the embedded MiniLM, whose adapters are big enough for a leak to show."""
    from training.model import embedded_model_path

    model_dir = Path(embedded_model_path())
    registry = LocalRegistry(tmp_path / "adapters")
    versions = [publish_adapter(registry, model_dir, seed=s) for s in (1, 2)]
    predictor = zero_shot(model_dir)
    serving = serving_model(predictor, registry, "embedded")
    process = psutil.Process()
    for i in range(20):  # warm up allocator caches
        serving.follow(versions[i % 2])
    gc.collect()
    before = process.memory_info().rss
    for i in range(500):
        assert serving.follow(versions[i % 2])
    gc.collect()
    growth_mb = (process.memory_info().rss - before) / 2**20
    assert serving.state.swaps == 520
    assert growth_mb < 20, f"RSS grew {growth_mb:.1f} MB over 500 swaps"


def label_set(version: int, *labels: Label, retired: tuple[str, ...] = ()) -> LabelSet:
    records = tuple(
        LabelRecord(
            label.name,
            label.description,
            "retired" if label.name in retired else "active",
            position,
            0.0,
            0.0,
        )  # fmt: skip
        for position, label in enumerate(labels, start=1)
    )
    return LabelSet(version, records)


TOY = labels_of(TOY_LABELS)
NEW = Label("pricing", "how much")  # words of the tiny vocabulary


def test_a_new_label_is_served_zero_shot_and_the_trained_rows_stay(setup, tiny_model_dir):
    serving, registry = setup
    version = publish_adapter(registry, tiny_model_dir, seed=8)
    assert serving.follow(version)
    trained_before, _ = scores(serving)
    assert serving.follow_labels(label_set(2, *TOY, NEW))
    assert serving.label_names == [*TOY_LABELS, "pricing"]
    assert serving.state.label_set_version == 2 and serving.state.labels == 4
    # Its row is the zero-shot one training would start it from: by the base encoder.
    fresh = zero_shot_predictor(str(tiny_model_dir), [*TOY, NEW], template="{name}",
                                device="cpu", precision="fp32")  # fmt: skip
    head = serving.predictor.model.head
    assert torch.allclose(head.weight[3], fresh.model.head.weight[3], atol=1e-5)
    assert float(head.bias[3]) == 0.0
    # The adapter's rows are as they were: with the new row masked, the same scores.
    with serving.lock:
        logits = serving.predictor.probabilities(TEXTS).log()
    renormalised = logits[:, :3].softmax(-1)
    assert torch.allclose(renormalised, trained_before, atol=1e-5)
    assert not serving.follow_labels(label_set(2, *TOY, NEW))  # same version: nothing to do


def test_a_retired_label_is_never_predicted(setup):
    serving, _ = setup
    serving.follow_labels(label_set(2, *TOY, NEW))
    assert serving.follow_labels(label_set(3, *TOY, NEW, retired=("lost_card",)))
    assert serving.label_names == ["exchange_rate", "refund_request", "pricing"]
    answers = serving.predictor.predict(["i lost my card", "stolen card", *TEXTS])
    assert {label for a in answers for label, _ in a.top} <= set(serving.label_names)


def test_a_changed_description_gets_a_new_zero_shot_row(setup):
    serving, _ = setup
    serving.follow_labels(label_set(2, *TOY, Label("pricing", "refund money back")))
    assert serving.predictor.predict(["refund money back"])[0].label == "pricing"
    serving.follow_labels(label_set(3, *TOY, NEW))
    assert serving.predictor.predict(["refund money back"])[0].label == "refund_request"


def test_one_batch_is_served_by_one_label_set_version(setup):
    serving, _ = setup
    sets = [label_set(v, *TOY, NEW, retired=() if v % 2 else ("pricing",)) for v in range(2, 40)]
    expected = {s.version: set(s.names()) for s in sets}
    seen, stop = [], threading.Event()

    def predict() -> None:
        while not stop.is_set():
            predictions, _, version = serving.predict(TEXTS)
            seen.append((version, {label for p in predictions for label, _ in p.top}))

    thread = threading.Thread(target=predict)
    thread.start()
    for s in sets:
        serving.follow_labels(s)
        time.sleep(0.005)
    stop.set()
    thread.join()
    assert len({version for version, _ in seen}) > 3
    for version, labels in seen:
        # top-k holds every label here (4 labels, k=5): exactly that version's set
        assert version == 0 or labels == expected[version], version
