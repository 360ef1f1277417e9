"""The online benchmark's stream variants and its "never worse" report, without a server."""

from __future__ import annotations

import argparse

from benchmarks.harness.data import Split
from benchmarks.online_data import add_variant_arguments, opaque, prepare
from benchmarks.online_report import never_worse, worse_promotions


def arguments(tmp_path, *extra: str) -> argparse.Namespace:
    rows = [(f"text {i}", f"{'ab'[i % 2]}{'xy'[i % 3 == 0]}") for i in range(40)]
    for name, part in (("train", rows[:30]), ("test", rows[30:])):
        (tmp_path / f"{name}.csv").write_text(
            "text,category\n" + "".join(f"{t},{y}\n" for t, y in part)
        )
    parser = argparse.ArgumentParser()
    add_variant_arguments(parser)
    args = parser.parse_args(list(extra))
    args.data, args.train, args.test = tmp_path, None, None
    args.text_column = args.label_column = None
    args.per_class, args.quick, args.seed, args.every = "2,5", False, 0, None
    return args


def test_opaque_codes_hide_the_names_and_keep_the_classes():
    train, test = opaque(Split(["1", "2", "3"], ["zeta", "alpha", "zeta"]), Split(["4"], ["alpha"]))
    assert train.labels == ["label_01", "label_00", "label_01"] and test.labels == ["label_00"]


def test_the_variants_name_the_run_and_reverse_or_cut_the_stream(tmp_path):
    name, plain, _, points = prepare(arguments(tmp_path))
    assert name == tmp_path.name and len(plain.texts) == 30
    name, back, test, cut = prepare(
        arguments(tmp_path, "--labels", "opaque", "--reverse", "--stream-per-class", "5")
    )
    assert name == f"{tmp_path.name}-opaque-reversed"
    assert back.texts == plain.texts[::-1] and set(test.labels) <= set(back.labels)
    assert all(label.startswith("label_") for label in back.labels)
    labels = len(set(back.labels))
    assert cut == [0, 2 * labels, 5 * labels] and points[-1] == 30


def test_never_worse_holds_within_a_point_of_the_better_baseline():
    results = {
        "baselines": {"zero_shot": 0.60, "head_only": {"10": 0.70, "20": 0.50}},
        "curve": [{"samples": 0, "accuracy": 0.60}, {"samples": 10, "accuracy": 0.695},
                  {"samples": 20, "accuracy": 0.58}],
    }  # fmt: skip
    assert [c["held"] for c in never_worse(results)] == [True, False]


def test_worse_promotions_lists_only_promotions_that_scored_below_what_they_replaced():
    runs = [
        {"id": 1, "state": "promoted", "validation_samples": 13, "current_accuracy": 9 / 13,
         "candidate_accuracy": 7 / 13},
        {"id": 2, "state": "rejected", "validation_samples": 13, "current_accuracy": 0.9,
         "candidate_accuracy": 0.1},
        {"id": 3, "state": "promoted", "validation_samples": 50, "current_accuracy": 0.5,
         "candidate_accuracy": 0.6},
    ]  # fmt: skip
    assert [(w["id"], w["validation_samples"]) for w in worse_promotions(runs)] == [(1, 13)]
