import pytest
import torch

from tests.conftest import TOY_LABELS
from training.labels import Label
from training.predictor import autocast_dtype, forward_rows, zero_shot_predictor

TEXTS = [
    "my card is lost",
    "hello",
    "i want to know about the exchange rate how much is a euro in dollar please",
    "refund",
    "my card is stolen please",
]


@pytest.fixture(scope="module")
def predictor(tiny_model_dir):
    labels = [Label(name) for name in TOY_LABELS]
    return zero_shot_predictor(
        str(tiny_model_dir),
        labels,
        template="{name}",
        device="cpu",
        precision="fp32",
        batch_size=2,
        top_k=2,
    )


def test_probabilities_are_a_distribution(predictor):
    probs = predictor.probabilities(TEXTS)
    assert probs.shape == (len(TEXTS), len(TOY_LABELS))
    assert probs.sum(-1).tolist() == pytest.approx([1.0] * len(TEXTS), abs=1e-5)


def test_batch_answers_equal_one_by_one_answers(predictor):
    # Length sorting and sub-batching must hand each text its own row back.
    together = predictor.probabilities(TEXTS)
    alone = torch.cat([predictor.probabilities([text]) for text in TEXTS])
    assert torch.allclose(together, alone, atol=1e-5)


def test_embeddings_and_probabilities_in_one_pass_equal_each_alone(predictor):
    vectors, probs = predictor.embeddings_and_probabilities(TEXTS)
    assert torch.allclose(vectors, predictor.embeddings(TEXTS), atol=1e-5)
    assert torch.allclose(probs, predictor.probabilities(TEXTS), atol=1e-5)


def test_predict_returns_top_k_sorted(predictor):
    [prediction] = predictor.predict(["my card is lost"])
    assert len(prediction.top) == 2
    assert prediction.top[0] == (prediction.label, prediction.score)
    assert prediction.top[0][1] >= prediction.top[1][1]
    assert prediction.label in TOY_LABELS
    assert predictor.predict([]) == []


def test_head_starts_from_label_prompt_embeddings(predictor):
    weights = torch.nn.functional.normalize(predictor.model.head.weight, dim=-1)
    expected = predictor.embeddings([name.replace("_", " ") for name in TOY_LABELS])
    assert torch.allclose(weights, expected, atol=1e-5)


def test_each_label_wins_on_its_own_prompt(predictor):
    # Zero-shot by construction: a label's prompt is closest to that label's row.
    prompts = [name.replace("_", " ") for name in TOY_LABELS]
    assert [p.label for p in predictor.predict(prompts)] == TOY_LABELS


def test_long_texts_are_truncated_to_max_tokens(predictor):
    long_text = " ".join(["card"] * 500)
    assert predictor.predict([long_text])[0].label in TOY_LABELS


def test_bf16_agrees_with_fp32(tiny_model_dir):
    if autocast_dtype(torch.device("cpu"), "auto") is None:
        pytest.skip("this CPU has no fast bf16")
    labels = [Label(name) for name in TOY_LABELS]
    kwargs = dict(template="{name}", device="cpu", batch_size=64)
    fp32 = zero_shot_predictor(str(tiny_model_dir), labels, precision="fp32", **kwargs)
    bf16 = zero_shot_predictor(str(tiny_model_dir), labels, precision="bf16", **kwargs)
    texts = TEXTS * 4  # >= 8 rows, so autocast is on
    assert torch.allclose(fp32.probabilities(texts), bf16.probabilities(texts), atol=0.05)


def test_forward_rows_default_suits_the_device():
    assert forward_rows(torch.device("cpu"), 0) == 16  # CPU forwards are fastest small
    assert forward_rows(torch.device("cuda"), 0) == 64
    assert forward_rows(torch.device("cpu"), 128) == 128  # an explicit setting wins


def test_auto_forward_rows_split_a_large_batch(tiny_model_dir):
    labels = [Label(name) for name in TOY_LABELS]
    auto = zero_shot_predictor(str(tiny_model_dir), labels, template="{name}", device="cpu",
                               precision="fp32")  # fmt: skip
    assert auto.batch_size == 16
    texts = [f"{text} {i}" for i in range(8) for text in TEXTS]  # 40 texts: 3 forwards
    alone = torch.cat([auto.probabilities([text]) for text in texts])
    assert torch.allclose(auto.probabilities(texts), alone, atol=1e-5)
