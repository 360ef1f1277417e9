"""Labelled splits and label sets, read in place from a data folder and never copied.

A split is a CSV or TSV with a header, a text column and a label column; a data folder
holds train.* and test.* splits and, for Banking77-style data, categories.json with the
label names (Banking77: Casanueva et al. 2020, CC-BY-4.0).
"""

from __future__ import annotations

import csv
import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from benchmarks.harness.server import ROOT
from training.__main__ import LABEL_COLUMNS
from training.labels import Label, load_labels

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "banking77"
TEXT_COLUMNS = ("text", "sentence", "utterance", "query", "message", "content")


@dataclass
class Split:
    texts: list[str]
    labels: list[str]

    def take(self, indices: Iterable[int]) -> Split:
        """The rows at `indices`, in that order."""
        indices = list(indices)
        return Split([self.texts[i] for i in indices], [self.labels[i] for i in indices])

    def per_label(self, count: int, labels: Iterable[str] | None = None, skip: int = 0) -> Split:
        """Rows `skip`..`skip + count` of each label (of `labels` only, if given), in order."""
        wanted = None if labels is None else set(labels)
        seen: dict[str, int] = {}
        keep = []
        for i, label in enumerate(self.labels):
            if wanted is None or label in wanted:
                seen[label] = seen.get(label, 0) + 1
                if skip < seen[label] <= skip + count:
                    keep.append(i)
        return self.take(keep)

    def shuffled(self, seed: int) -> Split:
        """The rows in a seeded random order, so that any prefix is a sample."""
        order = list(range(len(self.texts)))
        random.Random(seed).shuffle(order)
        return self.take(order)


def read_split(
    path: Path, text_column: str | None = None, label_column: str | None = None
) -> Split:
    """Texts and labels of a CSV or TSV with a header (tab by extension, else sniffed).

    Columns default to the first of TEXT_COLUMNS and of LABEL_COLUMNS (`python -m
    training import` reads the same label columns).
    """
    with path.open(encoding="utf-8", newline="") as handle:
        sample = handle.read(65536)
        handle.seek(0)
        tab = path.suffix.lower() == ".tsv" or sample.count("\t") > sample.count(",")
        rows = list(csv.DictReader(handle, delimiter="\t" if tab else ","))
    header = list(rows[0]) if rows else []
    text = pick_column(path, header, text_column, TEXT_COLUMNS)
    label = pick_column(path, header, label_column, LABEL_COLUMNS)
    return Split([r[text] for r in rows], [r[label].strip() for r in rows])


def pick_column(path: Path, header: list[str], wanted: str | None, known: tuple) -> str:
    """`wanted`, or the first of `known` in the header; exit naming the columns there are."""
    for name in [wanted] if wanted else known:
        if name in header:
            return name
    raise SystemExit(f"{path}: no column {wanted or ' / '.join(known)} in {header}")


def split_file(data_dir: Path, name: str) -> Path:
    """`name`.csv or `name`.tsv in `data_dir`."""
    found = sorted(data_dir.glob(f"{name}.[ct]sv"))
    if not found:
        raise SystemExit(f"no {name}.csv or {name}.tsv in {data_dir}")
    return found[0]


def load_split(data_dir: Path, name: str, known: Iterable[str] | None = None) -> Split:
    """The split `name` (train, test...) of a data folder; exits on labels outside `known`."""
    split = read_split(split_file(data_dir, name))
    if known is not None:
        check_known(split, known, f"the label set of {data_dir}")
    return split


def labels_file(data_dir: Path) -> Path:
    """The data's label set, as the service reads it (LIVETUNE_LABELS_FILE)."""
    return data_dir / "categories.json"


def read_labels(data_dir: Path) -> list[Label]:
    """The label names of categories.json, in its order (the order of the head's rows)."""
    return load_labels(labels_file(data_dir))


def check_known(split: Split, names: Iterable[str], what: str) -> None:
    """Exit if `split` has labels outside `names` (the label set `what`)."""
    unknown = set(split.labels) - set(names)
    if unknown:
        raise SystemExit(f"labels missing from {what}: {sorted(unknown)[:10]}")


class TextPool:
    """Endless supply of texts, so every timed slice sees a mix of lengths."""

    def __init__(self, texts: list[str], start: int = 0):
        self.texts = texts
        self.cursor = start

    def take(self, count: int) -> list[str]:
        """The next `count` texts, wrapping around at the end."""
        out = [self.texts[(self.cursor + i) % len(self.texts)] for i in range(count)]
        self.cursor += count
        return out


def add_data_arguments(parser) -> None:
    """The options every benchmark on a train/test pair takes: where, and which columns."""
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with train/test")
    parser.add_argument("--train", type=Path, help="train CSV/TSV (default: DATA/train.*)")
    parser.add_argument("--test", type=Path, help="test CSV/TSV (default: DATA/test.*)")
    parser.add_argument("--text-column", help=f"default: the first of {', '.join(TEXT_COLUMNS)}")
    parser.add_argument("--label-column", help=f"default: the first of {', '.join(LABEL_COLUMNS)}")
