"""benchmarks/online.py end to end on a toy CSV: the real server, the tiny model, the trainer."""

from __future__ import annotations

import json

import pytest

from benchmarks import online
from tests.factories import tiny_training_env, toy_samples

pytestmark = pytest.mark.integration


def write_tsv(path, samples) -> None:
    path.write_text("utterance\tintent\n" + "".join(f"{t}\t{y}\n" for t, y in samples))


def test_the_online_benchmark_records_a_learning_curve_with_promotions(tmp_path, tiny_model_dir):
    samples = toy_samples(300)
    write_tsv(tmp_path / "train.tsv", samples[:180])
    write_tsv(tmp_path / "test.tsv", samples[180:])
    env = tiny_training_env(tiny_model_dir)
    # One run per checkpoint; one thread each, as two fighting over a busy machine crawl.
    env.update(
        LIVETUNE_TRAIN_MIN_NEW_SAMPLES="90", LIVETUNE_TRAIN_THREADS="1", LIVETUNE_THREADS="1"
    )
    given = {"LIVETUNE_LABELS", "LIVETUNE_BASE_MODEL"}  # the benchmark sets these itself
    out = tmp_path / "out" / "online.json"
    args = ["--data", str(tmp_path), "--base-model", str(tiny_model_dir), "--every", "90"]
    args += ["--out", str(out), *(f"--set={k}={v}" for k, v in env.items() if k not in given)]

    online.main(args)

    results = json.loads(out.read_text())
    curve = results["curve"]
    assert [c["samples"] for c in curve] == [0, 90, 180]
    assert all(0 <= c["accuracy"] <= 1 and c["caught_up"] for c in curve)
    assert curve[0]["adapters"] == ["base"]
    assert results["swaps"]["promotions"] >= 1
    assert curve[-1]["adapters"] != ["base"]
    assert curve[-1]["accuracy"] > curve[0]["accuracy"]
    assert set(results["baselines"]["head_only"]) == {"90", "180"}
    assert set(results["baselines"]["head_only_train_split"]) == {"90", "180"}
    promoted = [r for r in results["runs"] if r["state"] == "promoted"]
    assert all(r["trigger_to_served_s"] >= r["trigger_to_finish_s"] > 0 for r in promoted)
    assert results["service_settings"]["LIVETUNE_TRAIN__EPOCHS"] == env["LIVETUNE_TRAIN__EPOCHS"]
    # The test set went through the evaluation replica, which remembers nothing: no test
    # text is in the log that self-training and the review queue read; the traffic is.
    assert results["prediction_log"] == {"test": 0, "uncorrected": results["uncorrected_served"]}
    assert results["uncorrected_served"] > 0
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    assert [c["samples"] for c in results["never_worse"]] == [90, 180]
    assert isinstance(results["worse_promotions"], list)
