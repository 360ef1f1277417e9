"""The online benchmark's data: the train stream in its seeded order (or that order
reversed), the test set, the checkpoints, and the variants that take the zero-shot prior
away (label names replaced by opaque codes: a start that trusts the names blindly shows).

Works on any CSV/TSV with a text and a label column.
"""

from __future__ import annotations

import random

from benchmarks.harness.data import Split, check_known, read_split, split_file

PER_CLASS = (10, 20, 40)  # the few-shot points, and one more
QUICK = {"labels": 12, "per_class": (10, 20), "test_per_class": 10}


def load_data(args) -> tuple[Split, Split]:
    """(train, test) from --train/--test, or train.* and test.* in --data."""
    files = [
        given or split_file(args.data, name)
        for name, given in (("train", args.train), ("test", args.test))
    ]
    train, test = (read_split(f, args.text_column, args.label_column) for f in files)
    check_known(test, train.labels, "the train data")
    return train, test


def quick_subset(train: Split, test: Split, seed: int) -> tuple[Split, Split]:
    """A few labels, the stream up to the last checkpoint, a few test texts a label."""
    labels = set(random.Random(seed).sample(sorted(set(train.labels)), QUICK["labels"]))
    train = train.take([i for i, y in enumerate(train.labels) if y in labels])
    seen: dict[str, int] = {}
    keep = []
    for i, label in enumerate(test.labels):
        if label in labels and seen.get(label, 0) < QUICK["test_per_class"]:
            seen[label] = seen.get(label, 0) + 1
            keep.append(i)
    return train, test.take(keep)


def opaque(train: Split, test: Split) -> tuple[Split, Split]:
    """Every label renamed `label_00`, `label_01`... in sorted order: names that tell the
    model nothing, so its zero-shot answers are chance."""
    names = sorted(set(train.labels))
    width = max(2, len(str(len(names) - 1)))
    code = {name: f"label_{i:0{width}d}" for i, name in enumerate(names)}
    return (
        Split(train.texts, [code[y] for y in train.labels]),
        Split(test.texts, [code[y] for y in test.labels]),
    )


def checkpoints(n_labels: int, total: int, per_class, every: int | None) -> list[int]:
    """Stream positions to measure at: 0, then per-class multiples (or every K), and the end."""
    points = range(every, total, every) if every else (k * n_labels for k in per_class)
    return sorted({0, total, *(p for p in points if p < total)})


def add_variant_arguments(parser) -> None:
    parser.add_argument(
        "--labels",
        choices=("names", "opaque"),
        default="names",
        help="opaque: label names replaced by label_00... (no zero-shot prior)",
    )
    parser.add_argument(
        "--reverse", action="store_true", help="stream the seeded order back to front"
    )
    parser.add_argument(
        "--stream-per-class",
        type=int,
        help="stop streaming after this many corrections a label (default: all the data)",
    )


def prepare(args) -> tuple[str, Split, Split, list[int]]:
    """The data's name, the train stream in its order, the test set, the checkpoints."""
    train, test = load_data(args)
    if args.labels == "opaque":
        train, test = opaque(train, test)
    per_class = [int(k) for k in args.per_class.split(",") if k]
    if args.quick:
        train, test = quick_subset(train, test, args.seed)
        per_class = list(QUICK["per_class"])
    train = train.shuffled(args.seed)
    if args.reverse:
        train = train.take(reversed(range(len(train.texts))))
    n_labels = len(set(train.labels))
    limit = max(per_class) if args.quick else args.stream_per_class
    total = min(len(train.texts), limit * n_labels) if limit else len(train.texts)
    name = args.train.stem if args.train else args.data.resolve().name
    variant = ("-opaque" if args.labels == "opaque" else "") + ("-reversed" if args.reverse else "")
    return name + variant, train, test, checkpoints(n_labels, total, per_class, args.every)
