import json
import random

import pytest
import torch
from pydantic import ValidationError

from tests.conftest import TOY_LABELS
from training.adapters import attach_lora
from training.labels import Label
from training.model import TextClassifier, load_encoder
from training.predictor import Predictor
from training.trainer import TrainConfig, Trainer, class_weights, length_batches

KEYWORDS = {
    "lost_card": ["lost", "stolen"],
    "exchange_rate": ["exchange", "rate", "euro"],
    "refund_request": ["refund", "back"],
}
FILLER = ["hello", "world", "i", "my", "the", "a", "is", "want", "to", "know", "about", "please"]
# Small enough for the 16-wide tiny model to learn the toy task in about a second.
TINY = TrainConfig(
    epochs=20,
    batch_size=16,
    learning_rate=2e-2,
    head_learning_rate=2e-2,
    head_fit_steps=50,
    max_tokens=16,
    precision="fp32",
    min_steps=0,
)


def toy_samples(n: int, seed: int) -> tuple[list[str], list[str]]:
    """`n` texts of 1-4 filler words around one class keyword, labels in turn."""
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        label = TOY_LABELS[i % len(TOY_LABELS)]
        words = rng.choices(FILLER, k=rng.randint(1, 4))
        words.insert(rng.randrange(len(words) + 1), rng.choice(KEYWORDS[label]))
        texts.append(" ".join(words))
        labels.append(label)
    return texts, labels


TRAIN = toy_samples(96, seed=1)  # 6 batches of 16 per epoch
HELD_OUT = toy_samples(60, seed=2)


def lora_model(model_dir, config: TrainConfig, seed: int = 0):
    """A fresh TextClassifier with a trainable LoRA, its random parts drawn from `seed`."""
    torch.manual_seed(seed)
    encoder, tokenizer = load_encoder(str(model_dir))
    model = TextClassifier(encoder, len(TOY_LABELS))
    attach_lora(model, config)
    return model, tokenizer


def accuracy(model, tokenizer, texts, labels) -> float:
    predictor = Predictor(
        model, tokenizer, [Label(n) for n in TOY_LABELS], device="cpu", precision="fp32"
    )
    return sum(p.label == y for p, y in zip(predictor.predict(texts), labels)) / len(labels)


# --- class_weights ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "targets, num_labels",
    [
        ([0, 0, 0, 1], 3),
        ([0, 1, 1, 1, 1, 1, 1, 1, 2, 2], 3),
        ([2, 2, 0], 4),
        ([0, 1, 2], 3),
    ],
)
def test_class_weights_give_every_present_label_the_same_total_weight(targets, num_labels):
    weights = class_weights(targets, num_labels)
    counts = torch.bincount(torch.tensor(targets), minlength=num_labels)
    present = counts > 0
    totals = (weights * counts)[present]
    assert torch.allclose(totals, totals[0].expand_as(totals))
    # Averaged over the samples the weight is 1, so the loss keeps its usual scale.
    assert weights[torch.tensor(targets)].mean().item() == pytest.approx(1.0)
    assert weights[~present].tolist() == [0.0] * int((~present).sum())


def test_class_weights_favour_the_rare_label():
    weights = class_weights([0, 0, 0, 0, 0, 0, 1, 2, 2], num_labels=4)
    assert weights[1] > weights[2] > weights[0] > 0
    assert weights[3] == 0


def test_class_weights_are_all_one_when_balanced():
    assert class_weights([0, 1, 2, 0, 1, 2], 3).tolist() == [1.0, 1.0, 1.0]


# --- length_batches ----------------------------------------------------------------------


def random_lengths(n: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(1, 60) for _ in range(n)]


@pytest.mark.parametrize(
    "n, batch_size",
    [(0, 4), (1, 4), (10, 3), (100, 16), (96, 16), (1_000, 4)],  # 1_000 spans 5 pools of 200
)
def test_length_batches_cover_every_sample_once(n, batch_size):
    batches = length_batches(random_lengths(n), batch_size, random.Random(0))
    assert sorted(i for batch in batches for i in batch) == list(range(n))
    assert all(1 <= len(batch) <= batch_size for batch in batches)


@pytest.mark.parametrize("n, batch_size", [(10, 3), (100, 16), (300, 8)])
def test_length_batches_group_similar_lengths(n, batch_size):
    lengths = random_lengths(n)
    batches = length_batches(lengths, batch_size, random.Random(0))
    # One pool: the batches are consecutive slices of the samples sorted by length.
    spans = sorted((min(lengths[i] for i in b), max(lengths[i] for i in b)) for b in batches)
    assert all(high <= next_low for (_, high), (next_low, _) in zip(spans, spans[1:]))
    assert sum(len(batch) < batch_size for batch in batches) <= 1


def test_length_batches_are_reproducible_per_seed_and_reshuffled_per_epoch():
    lengths = random_lengths(200)
    first = length_batches(lengths, 8, random.Random(7))
    assert length_batches(lengths, 8, random.Random(7)) == first
    assert length_batches(lengths, 8, random.Random(8)) != first
    rng = random.Random(7)
    assert length_batches(lengths, 8, rng) != length_batches(lengths, 8, rng)


# --- TrainConfig -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [
        {"epochs": -1},
        {"epochs": 0},
        {"max_steps": -1},
        {"max_seconds": -0.5},
        {"batch_size": 0},
        {"lora_r": 0},
        {"learning_rate": 0},
        {"lora_dropout": 1.0},
        {"max_tokens": 4},
        {"precision": "fp8"},
        {"epoch": 3},  # a typo must not silently fall back to the default
    ],
)
def test_train_config_rejects_bad_values(values):
    with pytest.raises(ValidationError):
        TrainConfig(**values)


def test_train_config_is_frozen_and_round_trips_through_json():
    with pytest.raises(ValidationError):
        TINY.epochs = 1
    # The config is saved in the adapter's manifest and must read back the same.
    assert TrainConfig.model_validate(json.loads(TINY.model_dump_json())) == TINY


# --- Trainer -----------------------------------------------------------------------------


def test_training_learns_the_toy_task(tiny_model_dir):
    model, tokenizer = lora_model(tiny_model_dir, TINY)
    before = accuracy(model, tokenizer, *HELD_OUT)
    result = Trainer(model, tokenizer, TOY_LABELS, TINY).train(*TRAIN)
    after = accuracy(model, tokenizer, *HELD_OUT)
    assert before < 0.6
    assert after >= 0.9
    assert result.stopped_by == "epochs"
    assert result.steps == 20 * 6
    assert result.samples_seen == 20 * len(TRAIN[0])
    assert result.epochs == pytest.approx(20.0)


@pytest.mark.parametrize(
    "budget, steps, stopped_by",
    [
        ({"epochs": 1}, 6, "epochs"),
        ({"epochs": 0.5}, 3, "epochs"),
        ({"epochs": 50, "max_steps": 3}, 3, "max_steps"),
        ({"epochs": 1, "max_steps": 100}, 6, "epochs"),
    ],
)
def test_training_stops_at_its_step_budget(tiny_model_dir, budget, steps, stopped_by):
    config = TINY.model_copy(update={"head_fit_steps": 0, **budget})
    model, tokenizer = lora_model(tiny_model_dir, config)
    result = Trainer(model, tokenizer, TOY_LABELS, config).train(*TRAIN)
    assert (result.steps, result.stopped_by) == (steps, stopped_by)


def test_training_stops_at_its_time_budget(tiny_model_dir):
    config = TINY.model_copy(update={"epochs": 1_000, "max_seconds": 0.01, "head_fit_steps": 0})
    model, tokenizer = lora_model(tiny_model_dir, config)
    result = Trainer(model, tokenizer, TOY_LABELS, config).train(*TRAIN)
    assert result.stopped_by == "max_seconds"
    assert result.steps < 100  # of the 6_000 that 1_000 epochs would take
    assert result.seconds < 5


def test_same_seed_gives_the_same_model(tiny_model_dir):
    config = TINY.model_copy(update={"max_steps": 8, "seed": 3})
    heads = []
    for _ in range(2):
        model, tokenizer = lora_model(tiny_model_dir, config, seed=3)
        Trainer(model, tokenizer, TOY_LABELS, config).train(*TRAIN)
        heads.append({k: v.clone() for k, v in model.state_dict().items()})
    assert heads[0].keys() == heads[1].keys()
    assert all(torch.equal(heads[0][k], heads[1][k]) for k in heads[0])

    other = TINY.model_copy(update={"max_steps": 8, "seed": 4})
    model, tokenizer = lora_model(tiny_model_dir, other, seed=3)
    Trainer(model, tokenizer, TOY_LABELS, other).train(*TRAIN)
    assert not torch.equal(model.head.weight, heads[0]["head.weight"])


def test_training_changes_only_lora_and_head(tiny_model_dir):
    config = TINY.model_copy(update={"max_steps": 10})
    model, tokenizer = lora_model(tiny_model_dir, config)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    Trainer(model, tokenizer, TOY_LABELS, config).train(*TRAIN)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    base = {k for k in before if k.startswith("encoder.") and "lora_" not in k}
    assert len(base) > 30
    assert not changed & base
    assert {"head.weight", "head.bias"} <= changed
    assert any("lora_B" in k for k in changed)  # lora_B starts at zero: LoRA did learn


def test_long_texts_train_when_max_tokens_exceeds_the_model_limit(tiny_model_dir):
    # The tiny model has 64 positions; max_tokens=128 is a valid TrainConfig.
    config = TINY.model_copy(update={"max_tokens": 128, "max_steps": 2, "head_fit_steps": 2})
    model, tokenizer = lora_model(tiny_model_dir, config)
    texts = [" ".join(["hello"] * 100) + " lost", "exchange rate", "refund please"]
    result = Trainer(model, tokenizer, TOY_LABELS, config).train(texts, TOY_LABELS)
    assert result.steps == 2


def test_small_data_still_gets_min_steps(tiny_model_dir):
    config = TINY.model_copy(update={"epochs": 1, "min_steps": 10, "head_fit_steps": 0})
    model, tokenizer = lora_model(tiny_model_dir, config)
    texts, labels = toy_samples(48, seed=0)
    result = Trainer(model, tokenizer, TOY_LABELS, config).train(texts, labels)
    assert (result.steps, result.stopped_by) == (10, "min_steps")
