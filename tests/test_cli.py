"""`python -m training import | export` as a user runs it: a real process on a real store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.factories import tiny_training_env, training_cli, write_toy_csv

ROOT = Path(__file__).resolve().parents[1]


def cli(tmp_path: Path, *args: str, **settings: str) -> subprocess.CompletedProcess:
    data = {"LIVETUNE_DATA_DIR": str(tmp_path / "data"), "LIVETUNE_LABELS": "lost_card,refund"}
    return training_cli({**data, **settings}, *args, timeout=300)


def export(tmp_path: Path, *args: str) -> list[dict]:
    result = cli(tmp_path, "export", *args)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_import_csv_then_export(tmp_path):
    path = tmp_path / "seed.csv"
    path.write_text('text,category\nI lost my card,lost_card\n"money back, please",refund\n')
    result = cli(tmp_path, "import", str(path))
    assert result.returncode == 0, result.stderr
    assert "2 stored, 0 duplicates" in result.stdout
    rows = export(tmp_path)
    assert [(r["text"], r["label"], r["source"]) for r in rows] == [
        ("I lost my card", "lost_card", "import:seed.csv"),
        ("money back, please", "refund", "import:seed.csv"),
    ]
    assert {r["split"] for r in rows} <= {"train", "validation"}


def test_import_jsonl_twice_is_idempotent(tmp_path):
    path = tmp_path / "seed.jsonl"
    path.write_text(
        '{"text": "card stolen", "label": "lost_card"}\n\n{"text": "refund", "label": "refund"}\n'
    )
    assert cli(tmp_path, "import", str(path)).returncode == 0
    again = cli(tmp_path, "import", str(path))
    assert "0 stored, 2 duplicates" in again.stdout
    assert len(export(tmp_path)) == 2


def test_a_file_with_bad_rows_is_refused_whole(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("text,label\nfine,lost_card\n,refund\nok,not_a_label\n")
    result = cli(tmp_path, "import", str(path))
    assert result.returncode == 2
    assert "line 3: text is missing or empty" in result.stderr
    assert "line 4: unknown label 'not_a_label'" in result.stderr
    assert "valid labels: lost_card, refund" in result.stderr
    assert export(tmp_path) == []


def test_export_all_includes_superseded_history(tmp_path):
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    first.write_text("text,label\nwhere is it,lost_card\n")
    second.write_text("text,label\nwhere is it,refund\n")
    cli(tmp_path, "import", str(first))
    cli(tmp_path, "import", str(second))
    assert [r["label"] for r in export(tmp_path)] == ["refund"]
    history = export(tmp_path, "--all")
    assert [(r["label"], r["superseded_by"]) for r in history] == [
        ("lost_card", history[1]["id"]),
        ("refund", None),
    ]


@pytest.mark.parametrize(
    "module",
    [
        "training.__main__",
        "training.loop",
        "training.backends",
        "training.store",
        "training.predictor",
        "training.settings",
    ],
)
def test_training_runs_without_bentoml_or_the_http_service(module):
    code = (
        f"import sys, {module}; "
        "sys.exit(any(m.partition('.')[0] in ('bentoml', 'service') for m in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def test_run_once_trains_and_runs_lists_it(tmp_path, tiny_model_dir):
    path = write_toy_csv(tmp_path / "toy.csv")
    env = tiny_training_env(tiny_model_dir)
    assert cli(tmp_path, "import", str(path), **env).returncode == 0
    result = cli(tmp_path, "run", "--once", **env)
    assert result.returncode == 0, result.stderr
    run = json.loads(result.stdout)
    assert run["state"] == "promoted", run["reason"]
    assert (tmp_path / "data" / "adapters" / "CURRENT").read_text().strip() == run["candidate"]
    listed = cli(tmp_path, "runs", **env)
    assert [json.loads(line)["id"] for line in listed.stdout.splitlines()] == [run["id"]]


def test_a_run_killed_midway_leaves_the_registry_consistent(tmp_path, tiny_model_dir):
    import signal
    import sqlite3
    import time

    env = tiny_training_env(tiny_model_dir)
    env["LIVETUNE_TRAIN__EPOCHS"] = "400"  # long enough to be killed in the middle
    path = write_toy_csv(tmp_path / "toy.csv")
    assert cli(tmp_path, "import", str(path), **env).returncode == 0
    process = subprocess.Popen(
        [sys.executable, "-m", "training", "run", "--once"],
        cwd=ROOT,
        env={**os.environ, "LIVETUNE_DATA_DIR": str(tmp_path / "data"), **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    database = tmp_path / "data" / "feedback.sqlite3"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with sqlite3.connect(database) as db:
            running = db.execute("SELECT count(*) FROM training_runs WHERE state = 'running'")
            if running.fetchone()[0]:
                break
        time.sleep(0.05)
    time.sleep(1.0)  # into the training loop
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    adapters = tmp_path / "data" / "adapters"
    assert not (adapters / "CURRENT").exists()
    # The next run takes the lock the dead process held, marks its run failed, and works.
    result = cli(tmp_path, "run", "--once", **{**env, "LIVETUNE_TRAIN__EPOCHS": "25"})
    assert result.returncode == 0, result.stderr
    run = json.loads(result.stdout)
    assert run["state"] == "promoted", run["reason"]
    assert [p.name for p in adapters.iterdir() if p.name.startswith(".staging")] == []
    runs = [json.loads(line) for line in cli(tmp_path, "runs", **env).stdout.splitlines()]
    assert [(r["state"], "interrupted" in (r["reason"] or "")) for r in runs] == [
        ("promoted", False),
        ("failed", True),
    ]


def test_the_trainer_lowers_its_own_cpu_priority():
    code = "import os; from training.loop import yield_cpu; yield_cpu(7); print(os.nice(0))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.stdout.strip() == str(os.nice(0) + 7 if os.nice(0) + 7 <= 19 else 19)
