"""One training recipe on the train split the promotion gate leaves, scored on the test set.

The online benchmark's last adapter trains on the corrections outside the gate's
validation share (`LIVETUNE_VALIDATION_PERCENT`, by text hash). This trains one adapter
from scratch on exactly those train-split texts with the given hyper-parameters, and
prints its test accuracy: a few minutes per recipe instead of a 25-minute online run.

    .venv/bin/python -m benchmarks.recipe_probe --data ../shared/data/banking77 \\
        --validation-percent 10 --set epochs=5 --set lora_layers=0

Data: Banking77 (Casanueva et al. 2020, CC-BY-4.0), read in place, never copied.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from benchmarks.bench_training import fresh_model, test_accuracy
from benchmarks.harness.data import DEFAULT_DATA, load_split, read_labels
from training.split import split_for, text_key
from training.trainer import TrainConfig, Trainer


def setting(value: str) -> tuple[str, object]:
    """argparse type: KEY=VALUE, the value as JSON where it parses."""
    key, _, raw = value.partition("=")
    try:
        return key.strip(), json.loads(raw)
    except json.JSONDecodeError:
        return key.strip(), raw


def main(argv: list[str] | None = None) -> None:
    """Train one adapter on the gate's train split, print its test accuracy as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--validation-percent", type=float, default=20.0)
    parser.add_argument("--set", type=setting, action="append", default=[], metavar="KEY=VALUE",
                        help="a TrainConfig field, e.g. epochs=5")  # fmt: skip
    args = parser.parse_args(argv)
    names = [label.name for label in read_labels(args.data)]
    train, test = load_split(args.data, "train"), load_split(args.data, "test")
    keep = train.take(
        i for i, text in enumerate(train.texts)
        if split_for(text_key(text), args.validation_percent) == "train"
    )  # fmt: skip
    config = TrainConfig(**dict(args.set))
    model, tokenizer = fresh_model(names, config)
    started = time.perf_counter()
    result = Trainer(model, tokenizer, names, config).train(keep.texts, keep.labels)
    accuracy = test_accuracy(model, tokenizer, names, test.texts, test.labels)
    print(json.dumps({
        "validation_percent": args.validation_percent, "set": dict(args.set),
        "train_samples": len(keep.texts), "test_accuracy": round(accuracy, 4),
        "train_seconds": round(time.perf_counter() - started), "steps": result.steps,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
