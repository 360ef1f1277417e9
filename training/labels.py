"""The label set: names, optional one-line descriptions, and the text that seeds the head."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

LABEL_NAME = re.compile(r"^[^\x00-\x1f\s](?:[^\x00-\x1f]{0,126}[^\x00-\x1f\s])?$")
NAME_RULE = "1-128 printable characters, no outer spaces"
MAX_DESCRIPTION_CHARS = 500  # a prompt to embed: the encoder truncates far below this
CONTROL = re.compile(r"[\x00-\x1f\x7f]")

# The head starts as the embedding of this text for each label. A sentence embeds
# closer to real user messages than a bare identifier: of the 16 domain-free templates
# that `python -m benchmarks.bench_templates` compares on the Banking77 *train* split,
# this one scores best (62.9% vs 61.6% for the bare name); it reports the test split too.
DEFAULT_TEMPLATE = "I want to know about {name}"


@dataclass(frozen=True)
class Label:
    name: str
    description: str = ""

    def prompt(self, template: str = DEFAULT_TEMPLATE) -> str:
        """The text whose embedding initialises this label's row of the head."""
        if self.description:
            return self.description
        return template.format(name=humanize(self.name))


def humanize(name: str) -> str:
    """`lost_or_stolen_card` -> `lost or stolen card`."""
    return re.sub(r"[_\-./:]+", " ", name).strip()


def parse_labels(value: list | dict) -> list[Label]:
    """Labels from a JSON-like value: a list of names or a {name: description} map."""
    if isinstance(value, dict):
        labels = [Label(str(k), str(v or "").strip()) for k, v in value.items()]
    elif isinstance(value, list):
        labels = [_label_from_item(item) for item in value]
    else:
        raise ValueError("labels must be a list of names or a {name: description} object")
    return _checked(labels)


def load_labels(path: str | Path) -> list[Label]:
    """Labels from a file: JSON (list or object), or text with one `name[: description]` a line."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"label file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        return parse_labels(json.loads(text))
    labels = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, description = line.partition(":")
        labels.append(Label(name.strip(), description.strip()))
    return _checked(labels)


def _label_from_item(item: object) -> Label:
    if isinstance(item, str):
        return Label(item.strip())
    if isinstance(item, dict) and "name" in item:
        return Label(str(item["name"]).strip(), str(item.get("description") or "").strip())
    raise ValueError(f"label entry {item!r} is neither a name nor {{name, description}}")


def _checked(labels: list[Label]) -> list[Label]:
    if len(labels) < 2:
        raise ValueError(f"need at least 2 labels, got {len(labels)}")
    names = [label.name for label in labels]
    bad = [n for n in names if not LABEL_NAME.match(n)]
    if bad:
        raise ValueError(f"invalid label names {bad[:5]}: {NAME_RULE}")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"duplicate label names: {dupes[:5]}")
    return labels


def check_name(name: object) -> str:
    """A label name as given, or ValueError saying why it cannot be one."""
    if not isinstance(name, str) or not LABEL_NAME.match(name):
        raise ValueError(f"invalid label name {name!r}: {NAME_RULE}")
    return name


def check_description(description: object) -> str:
    """A description, stripped; empty means the label template is embedded instead."""
    if description is None:
        return ""
    if not isinstance(description, str):
        raise ValueError(f"a description is text, not {type(description).__name__}")
    description = description.strip()
    if len(description) > MAX_DESCRIPTION_CHARS:
        raise ValueError(f"a description has at most {MAX_DESCRIPTION_CHARS} characters")
    if CONTROL.search(description):
        raise ValueError("a description has no control characters (tabs, newlines...)")
    return description
