"""The embedded all-MiniLM-L6-v2 where real language matters: day-0 zero-shot answers."""

import pytest

from training.labels import DEFAULT_TEMPLATE, Label
from training.predictor import zero_shot_predictor

CASES = [
    ("I lost my card on the bus yesterday", "lost_card"),
    ("Someone stole my bank card, please block it", "lost_card"),
    ("What is the euro to dollar exchange rate today?", "exchange_rate"),
    ("How much will I get if I convert 100 pounds to yen?", "exchange_rate"),
    ("I returned the shoes, when do I get my money back?", "refund_request"),
    ("Please refund the duplicate charge", "refund_request"),
]


@pytest.fixture(scope="module")
def predictor():
    labels = [Label("lost_card"), Label("exchange_rate"), Label("refund_request")]
    return zero_shot_predictor(None, labels, template=DEFAULT_TEMPLATE, device="cpu")


@pytest.mark.parametrize(("text", "label"), CASES)
def test_obvious_texts_get_the_right_label_before_any_training(predictor, text, label):
    [prediction] = predictor.predict([text])
    assert prediction.label == label, prediction.top


def test_confidence_is_higher_for_the_right_label(predictor):
    probs = predictor.probabilities([text for text, _ in CASES])
    names = [label.name for label in predictor.labels]
    for row, (_, label) in zip(probs, CASES):
        assert row[names.index(label)] > 0.5
