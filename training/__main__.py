"""`python -m training import FILE | export | run [--once] | runs | migrate-store | ...`.

Seed the feedback store, dump it, train (on the trigger, or once now), list runs, move
the data to another store or registry.

Reads the same LIVETUNE_* settings as the service (data directory, labels, limits).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

from training import migrate
from training.backends import open_store
from training.job_settings import JobSettings
from training.settings import CoreSettings, SettingsError, load_settings
from training.store import NewSample, RunState

LABEL_COLUMNS = ("label", "category", "intent")
CHUNK = 1_000
MAX_LISTED_ERRORS = 20


def read_rows(
    path: Path, text_column: str, label_column: str | None
) -> Iterator[tuple[int, str, str]]:
    """(line number, text, label) from a CSV with a header, or from JSON Lines."""
    with path.open(encoding="utf-8", newline="") as handle:
        if path.suffix in (".jsonl", ".ndjson"):
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    row = json.loads(line)
                    yield number, row.get(text_column), _label(row, label_column)
            return
        for number, row in enumerate(csv.DictReader(handle), start=2):
            yield number, row.get(text_column), _label(row, label_column)


def _label(row: dict, column: str | None):
    if column:
        return row.get(column)
    return next((row[c] for c in LABEL_COLUMNS if c in row), None)


def check_rows(rows, valid: set[str], max_chars: int) -> list[str]:
    """Every problem in the file, as 'line N: reason'."""
    problems = []
    for number, text, label in rows:
        if not isinstance(text, str) or not text.strip():
            problems.append(f"line {number}: text is missing or empty")
        elif len(text) > max_chars:
            problems.append(f"line {number}: text is longer than {max_chars} characters")
        elif "\x00" in text:  # PostgreSQL cannot store it: refused on every backend
            problems.append(f"line {number}: text contains a NUL character")
        if label not in valid:
            problems.append(f"line {number}: unknown label {label!r}")
    return problems


def import_file(args, settings) -> int:
    store = open_store(settings)
    # The store's active labels (seeded from the settings if it has none yet).
    seeded = store.seed_labels(settings.label_set(), time.time())
    labels = seeded.label_set.names()
    rows = list(read_rows(args.file, args.text_column, args.label_column))
    problems = check_rows(rows, set(labels), settings.max_text_chars)
    if problems:
        store.close()
        print(f"refused {args.file}: {len(problems)} problem(s), nothing stored", file=sys.stderr)
        print("\n".join(problems[:MAX_LISTED_ERRORS]), file=sys.stderr)
        print(f"valid labels: {', '.join(labels)}", file=sys.stderr)
        return 2
    source = args.source or f"import:{args.file.name}"
    stored = duplicates = 0
    for start in range(0, len(rows), CHUNK):
        chunk = [
            NewSample(text, label, source=source) for _, text, label in rows[start : start + CHUNK]
        ]
        result = store.add_samples(chunk)
        stored += len(chunk) - result.duplicates
        duplicates += result.duplicates
    store.close()
    print(f"imported {args.file}: {stored} stored, {duplicates} duplicates")
    return 0


def export_samples(args, settings) -> int:
    store = open_store(settings)
    out = args.out.open("w", encoding="utf-8") if args.out else sys.stdout
    count = 0
    for sample in store.samples(include_superseded=args.all):
        out.write(json.dumps(asdict(sample), ensure_ascii=False) + "\n")
        count += 1
    if args.out:
        out.close()
    store.close()
    print(f"exported {count} samples", file=sys.stderr)
    return 0


def run_training(args, settings) -> int:
    from training.locks import TrainingBusy
    from training.loop import TrainingLoop, job_from_settings, yield_cpu
    from training.lora_targets import check_base_model

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    train = settings.train
    targets = check_base_model(settings.base_model, train.target_modules, train.lora_layers)
    logging.info("LoRA targets: %s", targets.describe())
    yield_cpu(settings.train_nice)
    job = job_from_settings(settings)
    if not args.once:
        on_run = None
        if settings.trainer_metrics_port:
            from training.metrics import record_training_run, serve_metrics

            serve_metrics(settings.trainer_metrics_port)
            on_run = record_training_run
            logging.info("run metrics on :%d/metrics", settings.trainer_metrics_port)
        with contextlib.suppress(KeyboardInterrupt):
            TrainingLoop(job, settings.train_poll_s, on_run=on_run).run_forever()
        return 0
    try:
        run = job.run("manual")
    except TrainingBusy as exc:
        print(exc, file=sys.stderr)
        return 3
    finally:
        job.store.close()
    print(json.dumps(asdict(run), ensure_ascii=False))
    return 1 if run.state == RunState.FAILED else 0


def list_runs(args, settings) -> int:
    store = open_store(settings)
    for run in store.runs(limit=args.limit):
        print(json.dumps(asdict(run), ensure_ascii=False))
    store.close()
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)
    imp = commands.add_parser("import", help="seed the store from a CSV or JSONL of text,label")
    imp.add_argument("file", type=Path)
    imp.add_argument("--text-column", default="text")
    imp.add_argument("--label-column", help=f"default: the first of {', '.join(LABEL_COLUMNS)}")
    imp.add_argument("--source", help="recorded as each sample's source (default import:FILE)")
    exp = commands.add_parser("export", help="write stored samples as JSON Lines")
    exp.add_argument("--out", type=Path, help="file to write (default: standard output)")
    exp.add_argument("--all", action="store_true", help="include superseded samples (history)")
    run = commands.add_parser("run", help="train whenever the trigger says so, or --once now")
    run.add_argument("--once", action="store_true", help="one run now, then exit")
    runs = commands.add_parser("runs", help="recent training runs as JSON Lines, newest first")
    runs.add_argument("--limit", type=int, default=20)
    migrate.add_commands(commands)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        # Only `run` needs the trainer's settings (and torch); the rest reads the core ones.
        kind = JobSettings if args.command == "run" else CoreSettings
        settings = load_settings(kind, require_labels=args.command in ("import", "run"))
        if args.command == "import":
            if not args.file.is_file():
                print(f"no such file: {args.file}", file=sys.stderr)
                return 2
            return import_file(args, settings)
        commands = {"export": export_samples, "run": run_training, "runs": list_runs}
        return {**commands, **migrate.COMMANDS}[args.command](args, settings)
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
