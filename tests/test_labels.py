import json

import pytest

from training.labels import DEFAULT_TEMPLATE, Label, humanize, load_labels, parse_labels


def test_list_and_map_forms():
    assert parse_labels(["a", "b"]) == [Label("a"), Label("b")]
    assert parse_labels({"a": "about a", "b": None}) == [Label("a", "about a"), Label("b")]
    assert parse_labels([{"name": "a", "description": "x"}, "b"])[0] == Label("a", "x")


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (["only"], "at least 2"),
        (["a", "a"], "duplicate"),
        (["a", "new\nline"], "invalid label names"),
        (["a", ""], "invalid label names"),
        (["a", "x" * 129], "invalid label names"),
        (["a", "tab\there"], "invalid label names"),
        ([1, 2], "neither a name"),
        ("a,b", "must be a list"),
    ],
)
def test_bad_label_sets_are_refused(value, reason):
    with pytest.raises(ValueError, match=reason):
        parse_labels(value)


def test_text_file_with_descriptions(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("# comment\nlost_card: my card is gone\n\nrefund_request\n")
    assert load_labels(path) == [Label("lost_card", "my card is gone"), Label("refund_request")]


def test_json_file(tmp_path):
    path = tmp_path / "labels.json"
    path.write_text(json.dumps(["reverted_card_payment?", "age_limit"]))
    assert [label.name for label in load_labels(path)] == ["reverted_card_payment?", "age_limit"]


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_labels(tmp_path / "nope.txt")


def test_prompt_uses_description_else_template():
    assert Label("lost_or_stolen_card").prompt("{name}") == "lost or stolen card"
    assert Label("x", "a description").prompt("{name}") == "a description"
    assert "lost card" in Label("lost_card").prompt(DEFAULT_TEMPLATE)
    assert humanize("a-b.c/d:e") == "a b c d e"
