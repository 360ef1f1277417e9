import pytest
import torch
from safetensors.torch import save_file

from tests.conftest import TOY_LABELS, build_tiny_model
from training.adapters import (
    HEAD_FILE,
    AdapterMismatch,
    attach_lora,
    check_compatible,
    fingerprint,
    load_head,
    save_adapter,
)
from training.labels import Label
from training.model import TextClassifier, load_encoder
from training.predictor import Predictor
from training.registry import RegistryError
from training.trainer import TrainConfig, Trainer

CONFIG = TrainConfig(
    epochs=10,
    max_steps=12,
    batch_size=4,
    learning_rate=2e-2,
    head_learning_rate=2e-2,
    head_fit_steps=20,
    max_tokens=16,
    precision="fp32",
)
TRAIN_TEXTS = [
    "my card is lost",
    "my card was stolen please",
    "the exchange rate of the euro",
    "how much is a dollar in euro",
    "i want a refund",
    "please give my money back",
]
TRAIN_LABELS = ["lost_card", "lost_card", "exchange_rate", "exchange_rate"] + ["refund_request"] * 2
TEXTS = ["lost card", "hello world", "exchange rate please", "refund my money", "the the the"]


def probabilities(model, tokenizer, labels=TOY_LABELS) -> torch.Tensor:
    predictor = Predictor(
        model, tokenizer, [Label(n) for n in labels], device="cpu", precision="fp32"
    )
    return predictor.probabilities(TEXTS)


def fresh_model(model_dir, labels=TOY_LABELS, seed: int = 1):
    torch.manual_seed(seed)
    encoder, tokenizer = load_encoder(str(model_dir))
    return TextClassifier(encoder, len(labels)), tokenizer


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory):
    """(model, tokenizer, folder): a briefly trained LoRA model and the adapter it saved."""
    model, tokenizer = fresh_model(tiny_model_dir, seed=0)
    attach_lora(model, CONFIG)
    Trainer(model, tokenizer, TOY_LABELS, CONFIG).train(TRAIN_TEXTS, TRAIN_LABELS)
    folder = tmp_path_factory.mktemp("adapter")
    save_adapter(model, TOY_LABELS, folder)
    return model, tokenizer, folder


def warm_started(model_dir, folder, labels=TOY_LABELS):
    """A fresh model carrying the saved adapter, the way the service loads one."""
    model, tokenizer = fresh_model(model_dir, labels)
    attach_lora(model, CONFIG, warm_start=folder)
    matched = load_head(model, labels, folder)
    return model, tokenizer, matched


def test_saved_adapter_reloads_to_the_same_predictions(tiny_model_dir, trained):
    model, tokenizer, folder = trained
    reloaded, _, matched = warm_started(tiny_model_dir, folder)
    assert matched == len(TOY_LABELS)
    expected = probabilities(model, tokenizer)
    assert torch.allclose(probabilities(reloaded, tokenizer), expected, atol=1e-5)

    # The LoRA weights matter: the same head on the bare encoder answers differently.
    bare, _ = fresh_model(tiny_model_dir)
    load_head(bare, TOY_LABELS, folder)
    assert not torch.allclose(probabilities(bare, tokenizer), expected, atol=1e-3)


def test_adapter_folder_holds_no_pickles(trained):
    _, _, folder = trained
    names = {path.name for path in folder.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", HEAD_FILE} <= names
    assert all(name.endswith((".safetensors", ".json", ".md")) for name in names)


def test_warm_started_lora_is_trainable(tiny_model_dir, trained):
    _, _, folder = trained
    model, _, _ = warm_started(tiny_model_dir, folder)
    lora = {n: p.requires_grad for n, p in model.encoder.named_parameters() if "lora_" in n}
    assert lora and all(lora.values())
    base = [p.requires_grad for n, p in model.encoder.named_parameters() if "lora_" not in n]
    assert not any(base)


def test_warm_start_refuses_a_pickle_in_the_folder(tiny_model_dir, trained, tmp_path):
    _, _, folder = trained
    for entry in folder.iterdir():
        (tmp_path / entry.name).write_bytes(entry.read_bytes())
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    model, _ = fresh_model(tiny_model_dir)
    with pytest.raises(RegistryError, match="pytorch_model.bin"):
        attach_lora(model, CONFIG, warm_start=tmp_path)


def test_head_rows_follow_label_names_not_positions(tiny_model_dir, trained):
    model, tokenizer, folder = trained
    shuffled = [TOY_LABELS[2], TOY_LABELS[0], TOY_LABELS[1]]
    reloaded, _, matched = warm_started(tiny_model_dir, folder, shuffled)
    assert matched == len(TOY_LABELS)
    expected = probabilities(model, tokenizer)
    got = probabilities(reloaded, tokenizer, shuffled)
    for column, name in enumerate(shuffled):
        assert torch.allclose(got[:, column], expected[:, TOY_LABELS.index(name)], atol=1e-5)


def test_a_new_label_keeps_its_own_row(tiny_model_dir, trained):
    model, _, folder = trained
    labels = [TOY_LABELS[1], "card_declined", TOY_LABELS[0]]  # one dropped, one new
    fresh, _ = fresh_model(tiny_model_dir, labels)
    new_row = fresh.head.weight[1].clone(), fresh.head.bias[1].clone()
    assert load_head(fresh, labels, folder) == 2
    assert torch.equal(fresh.head.weight[1], new_row[0])
    assert torch.equal(fresh.head.bias[1], new_row[1])
    for row, name in [(0, TOY_LABELS[1]), (2, TOY_LABELS[0])]:
        assert torch.equal(fresh.head.weight[row], model.head.weight[TOY_LABELS.index(name)])
        assert torch.equal(fresh.head.bias[row], model.head.bias[TOY_LABELS.index(name)])


def test_a_head_of_another_width_is_refused(tiny_model_dir, tmp_path):
    tensors = {"weight": torch.zeros(3, 8), "bias": torch.zeros(3)}
    save_file(tensors, tmp_path / HEAD_FILE, metadata={"labels": '["a", "b", "c"]'})
    model, _ = fresh_model(tiny_model_dir)
    with pytest.raises(AdapterMismatch, match="does not fit"):
        load_head(model, ["a", "b", "c"], tmp_path)


# --- fingerprint and compatibility ------------------------------------------------------


def test_fingerprint_names_the_base_model(tiny_model_dir, tmp_path):
    first, _ = load_encoder(str(tiny_model_dir))
    again, _ = load_encoder(str(tiny_model_dir))
    other, _ = load_encoder(str(build_tiny_model(tmp_path, seed=1)))
    assert fingerprint(first) == fingerprint(again)
    assert fingerprint(first) != fingerprint(other)


def test_fingerprint_ignores_lora_weights(tiny_model_dir):
    model, _ = fresh_model(tiny_model_dir)
    attach_lora(model, CONFIG)
    before = fingerprint(model.encoder)
    with torch.no_grad():
        for name, param in model.encoder.named_parameters():
            if "lora_" in name:
                param.add_(1.0)
    assert fingerprint(model.encoder) == before


def test_fingerprint_is_the_same_with_lora_attached(tiny_model_dir):
    model, _ = fresh_model(tiny_model_dir)
    plain = fingerprint(model.encoder)  # before: peft wraps the encoder's layers in place
    attach_lora(model, CONFIG)
    assert fingerprint(model.encoder) == plain


@pytest.mark.parametrize(
    "manifest",
    [
        {"base_model": {"id": "other-bert", "fingerprint": "f" * 64}},
        {"base_model": {"id": "tiny-bert"}},
        {"base_model": {}},
        {},
    ],
)
def test_an_adapter_for_another_base_model_is_refused(manifest):
    with pytest.raises(AdapterMismatch) as caught:
        check_compatible(manifest, "v0007", "a" * 64, "tiny-bert")
    message = str(caught.value)
    assert "v0007" in message
    assert repr(manifest.get("base_model", {}).get("id", "?")) in message
    assert "'tiny-bert'" in message and "aaaaaaaaaaaa" in message
    assert "LIVETUNE_BASE_MODEL" in message


def test_an_adapter_for_this_base_model_is_accepted(tiny_model_dir):
    encoder, _ = load_encoder(str(tiny_model_dir))
    ours = fingerprint(encoder)
    manifest = {"base_model": {"id": "renamed/tiny-bert", "fingerprint": ours}}
    assert check_compatible(manifest, "v0001", ours, str(tiny_model_dir)) is None


def test_a_fresh_lora_starts_from_the_runs_seed(tiny_model_dir):
    def lora_weights(config, draws_before):
        model, _ = fresh_model(tiny_model_dir)
        torch.rand(draws_before)  # whatever the process drew before the run
        attach_lora(model, config)
        return {n: p.detach().clone() for n, p in model.encoder.named_parameters() if "lora_A" in n}

    first = lora_weights(CONFIG, 1)
    assert first
    again = lora_weights(CONFIG, 1_000)
    assert all(torch.equal(first[n], again[n]) for n in first)
    other = lora_weights(CONFIG.model_copy(update={"seed": CONFIG.seed + 1}), 1)
    assert not any(torch.equal(first[n], other[n]) for n in first)
