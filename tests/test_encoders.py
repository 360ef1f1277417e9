"""Other encoders than BERT: LoRA on their attention and feed-forward, trained and served.

Tiny random MPNet, RoBERTa and DistilBERT models are built from configs with their own
kind of tokenizer (WordPiece, byte-level BPE), so module names, config keys and inputs
are the architectures' real ones.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from service.swap import ServingModel
from tests.conftest import SPECIAL, TOY_WORDS
from tests.factories import TOY_LABELS, tiny_training_env, toy_samples, training_cli
from tests.factories import serving_model as new_serving_model
from training.adapters import attach_lora, fingerprint, load_head, save_adapter
from training.labels import Label
from training.lora_targets import check_base_model, layer_stack, resolve
from training.model import TextClassifier, encoder_skeleton, load_encoder
from training.predictor import Predictor, zero_shot_predictor
from training.registry import BASE, LocalRegistry
from training.settings import SettingsError
from training.trainer import TrainConfig, Trainer

LAYERS = 3
# Per architecture: the layer stack and the linear layers each of its layers holds.
ENCODERS = {
    "mpnet": (
        "encoder.layer",
        ["attention.attn.q", "attention.attn.k", "attention.attn.v", "attention.attn.o",
         "intermediate.dense", "output.dense"],
    ),
    "roberta": (
        "encoder.layer",
        ["attention.self.query", "attention.self.key", "attention.self.value",
         "attention.output.dense", "intermediate.dense", "output.dense"],
    ),
    "distilbert": (
        "transformer.layer",
        ["attention.q_lin", "attention.k_lin", "attention.v_lin", "attention.out_lin",
         "ffn.lin1", "ffn.lin2"],
    ),
}  # fmt: skip
CONFIG = TrainConfig(
    lora_layers=2,
    max_steps=6,
    min_steps=0,
    batch_size=8,
    learning_rate=2e-2,
    head_learning_rate=1e-2,
    head_fit_steps=10,
    max_tokens=16,
    precision="fp32",
)
TEXTS = ["i lost my card", "exchange rate euro", "refund my money please", "hello world"]


def wordpiece_vocab(special: list[str]) -> dict[str, int]:
    return {word: i for i, word in enumerate(special + TOY_WORDS)}


def byte_bpe_tokenizer(folder: Path):
    """A RoBERTa tokenizer whose byte-level BPE is trained on the toy words in memory."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizer

    bpe = ByteLevelBPETokenizer()
    special = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    sentences = [" ".join(TOY_WORDS[i : i + 5]) for i in range(len(TOY_WORDS))]
    bpe.train_from_iterator(sentences, vocab_size=300, special_tokens=special, show_progress=False)
    vocab, merges = bpe.save_model(str(folder))
    return RobertaTokenizer(vocab=vocab, merges=merges)


def build_tiny_encoder(kind: str, folder: Path, seed: int = 0) -> Path:
    """Save a 3-layer, 16-wide random encoder of `kind` and its tokenizer to `folder`."""
    import transformers as tf

    if kind == "mpnet":
        tokenizer = tf.MPNetTokenizer(vocab=wordpiece_vocab(["<s>", "<pad>", "</s>", "[UNK]",
                                                             "<mask>"]))  # fmt: skip
    elif kind == "distilbert":
        tokenizer = tf.DistilBertTokenizer(vocab=wordpiece_vocab(SPECIAL))
    else:
        tokenizer = byte_bpe_tokenizer(folder)
    sizes = {"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id,
             "max_position_embeddings": 64}  # fmt: skip
    bert_like = {"hidden_size": 16, "num_hidden_layers": LAYERS, "num_attention_heads": 2,
                 "intermediate_size": 32}  # fmt: skip
    torch.manual_seed(seed)
    if kind == "mpnet":
        model = tf.MPNetModel(tf.MPNetConfig(**sizes, **bert_like))
    elif kind == "roberta":
        model = tf.RobertaModel(tf.RobertaConfig(**sizes, **bert_like))
    else:
        config = tf.DistilBertConfig(**sizes, dim=16, n_layers=LAYERS, n_heads=2, hidden_dim=32)
        model = tf.DistilBertModel(config)
    model.save_pretrained(folder)  # with its pooler, where it has one
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module", params=list(ENCODERS))
def encoder_dir(request, tmp_path_factory) -> tuple[str, Path]:
    folder = tmp_path_factory.mktemp(request.param)
    return request.param, build_tiny_encoder(request.param, folder)


def lora_modules(encoder: nn.Module) -> set[str]:
    """The encoder modules peft put LoRA on, under their plain names."""
    from peft.tuners.lora import LoraLayer

    return {
        name.removeprefix("base_model.model.")
        for name, module in encoder.named_modules()
        if isinstance(module, LoraLayer)
    }


def probabilities(predictor: Predictor) -> torch.Tensor:
    predictor.model.eval()
    return predictor.probabilities(TEXTS)


def test_lora_goes_on_attention_and_feed_forward_of_the_top_layers(encoder_dir):
    kind, folder = encoder_dir
    encoder, _ = load_encoder(str(folder))
    model = TextClassifier(encoder, len(TOY_LABELS))
    attach_lora(model, CONFIG)
    stack, linears = ENCODERS[kind]
    expected = {f"{stack}.{i}.{name}" for i in (1, 2) for name in linears}
    assert lora_modules(model.encoder) == expected


@pytest.mark.parametrize(
    "lora_layers, layers", [(0, (0, 1, 2)), (1, (2,)), (2, (1, 2)), (3, (0, 1, 2)), (9, (0, 1, 2))]
)
def test_lora_layers_counts_the_encoders_own_layers(encoder_dir, lora_layers, layers):
    _, folder = encoder_dir
    assert resolve(encoder_skeleton(str(folder)), (), lora_layers).layers == layers


def test_trained_adapter_is_served_with_the_same_predictions(encoder_dir, tmp_path):
    kind, folder = encoder_dir
    labels = [Label(name) for name in TOY_LABELS]
    trained = zero_shot_predictor(str(folder), labels, template="{name}", device="cpu",
                                  precision="fp32")  # fmt: skip
    model = trained.model
    attach_lora(model, CONFIG)
    texts, targets = zip(*toy_samples(48))
    result = Trainer(model, trained.tokenizer, TOY_LABELS, CONFIG).train(texts, targets)
    assert result.steps == CONFIG.max_steps
    lora_b = [p for n, p in model.encoder.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b), "LoRA got no gradient"
    registry = LocalRegistry(tmp_path / "adapters")
    version = publish(registry, model, folder)
    saved = json.loads((registry.materialize(version) / "adapter_config.json").read_text())
    assert sorted(saved["target_modules"]) == sorted({n.rpartition(".")[2] for n in
                                                     ENCODERS[kind][1]})  # fmt: skip

    serving = serving_model(folder, registry)
    assert serving.follow(version), serving.state.last_error
    expected = probabilities(trained)
    assert torch.allclose(probabilities(serving.predictor), expected, atol=1e-5)
    warm = zero_shot_predictor(str(folder), labels, template="{name}", device="cpu",
                               precision="fp32")  # fmt: skip
    attach_lora(warm.model, CONFIG, warm_start=registry.materialize(version))
    load_head(warm.model, TOY_LABELS, registry.materialize(version))
    assert torch.allclose(probabilities(warm), expected, atol=1e-5)


def publish(registry: LocalRegistry, model: TextClassifier, base_dir: Path) -> str:
    """Save the trained adapter into the registry the way a training job does."""
    version = registry.new_version_name()
    base = {"id": str(base_dir), "fingerprint": fingerprint(model.encoder)}
    with registry.staging() as staged:
        save_adapter(model, TOY_LABELS, staged)
        registry.publish(staged, version, {"base_model": base, "parent": BASE})
    return version


def serving_model(base_dir: Path, registry: LocalRegistry) -> ServingModel:
    """A fresh serving worker on the base model, before it follows any adapter."""
    labels = [Label(name) for name in TOY_LABELS]
    predictor = zero_shot_predictor(str(base_dir), labels, template="{name}", device="cpu",
                                    precision="fp32")  # fmt: skip
    return new_serving_model(predictor, registry, str(base_dir))


def test_configured_targets_are_taken_by_name_or_dotted_suffix(encoder_dir):
    kind, folder = encoder_dir
    stack, linears = ENCODERS[kind]
    configured = (linears[0], linears[-1].rpartition(".")[2])  # "attention.attn.q", "dense"
    targets = check_base_model(str(folder), configured, 1)
    assert targets.modules == configured and targets.layers == (2,)


def test_a_target_the_encoder_lacks_names_the_setting_and_the_encoders_names(encoder_dir):
    kind, folder = encoder_dir
    have = ", ".join(dict.fromkeys(name.rpartition(".")[2] for name in ENCODERS[kind][1]))
    with pytest.raises(SettingsError, match="LIVETUNE_TRAIN__TARGET_MODULES") as error:
        check_base_model(str(folder), ("query", "nonexistent"), 3)
    assert f"theirs are named {have}." in str(error.value)
    assert "'nonexistent'" in str(error.value)
    encoder, _ = load_encoder(str(folder))
    with pytest.raises(SettingsError, match="LIVETUNE_TRAIN__TARGET_MODULES"):
        attach_lora(TextClassifier(encoder, 3), TrainConfig(target_modules=("nonexistent",)))


def test_the_trainer_refuses_to_start_on_a_target_the_encoder_lacks(tmp_path, tiny_model_dir):
    env = {**tiny_training_env(tiny_model_dir), "LIVETUNE_DATA_DIR": str(tmp_path / "data"),
           "LIVETUNE_TRAIN__TARGET_MODULES": '["q_lin"]'}  # fmt: skip
    done = training_cli(env, "run", "--once", timeout=120)
    assert done.returncode == 2, done.stderr
    assert "LIVETUNE_TRAIN__TARGET_MODULES" in done.stderr
    assert "theirs are named query, key, value, dense" in done.stderr


def test_bert_resolves_to_the_targets_it_always_had(tiny_model_dir):
    encoder, _ = load_encoder(str(tiny_model_dir))
    assert layer_stack(encoder).path == "encoder.layer"
    assert resolve(encoder, (), 0).modules == ("query", "key", "value", "dense")


def test_a_pooler_never_gets_lora(tmp_path):
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=32)  # fmt: skip
    model = TextClassifier(BertModel(config, add_pooling_layer=True), 3)
    attach_lora(model, TrainConfig(lora_layers=0))
    wrapped = lora_modules(model.encoder)
    assert "pooler.dense" not in wrapped
    assert len(wrapped) == 2 * 6  # query, key, value and three dense in each layer
