"""Which LIVETUNE_LABEL_TEMPLATE starts a label set best: zero-shot accuracy per template.

The head starts as the embedding of each label's prompt (the template around the
humanised name), so the template decides the zero-shot accuracy. This embeds the train
and test texts once, scores every template with the base model, picks the best on the
*train* split and reports it on the test split, next to the default template and the
bare name. Extra templates: --template '...{name}...' (repeatable).

Any `train.csv` / `test.csv` with `text,category` columns and a `categories.json`
works (Banking77: Casanueva et al. 2020, CC-BY-4.0, read in place, never copied):
    .venv/bin/python -m benchmarks.bench_templates --data ../shared/data/banking77
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from benchmarks.harness.data import DEFAULT_DATA, load_split, read_labels
from benchmarks.harness.report import RESULTS, say, write_json
from training.labels import DEFAULT_TEMPLATE, Label
from training.predictor import Predictor, zero_shot_predictor

DEFAULT_OUT = RESULTS / "templates.json"
# Domain-free templates: nothing here names banking or any other field.
TEMPLATES = [
    "{name}",
    DEFAULT_TEMPLATE,
    "{name}?",
    "about {name}",
    "Tell me about {name}",
    "I have a question about {name}",
    "I have a query about {name}",
    "My question is about {name}",
    "I need information on {name}",
    "I want to know about my {name}",
    "I need help with {name}",
    "Can you help me with {name}?",
    "I have a problem with {name}",
    "This is about {name}.",
    "Customer question: {name}",
    "Regarding {name}",
]


def embed_splits(predictor: Predictor, data: Path, names: list[str]) -> dict:
    """(embeddings, gold label indices) of the train and test splits."""
    index = {name: i for i, name in enumerate(names)}
    splits = {}
    for name in ("train", "test"):
        split = load_split(data, name, known=names)
        say(f"embedding {len(split.texts)} {name} texts")
        gold = torch.tensor([index[label] for label in split.labels])
        splits[name] = (predictor.embeddings(split.texts).float(), gold)
    return splits


def score(predictor: Predictor, splits: dict, names: list[str], templates: list[str]) -> list:
    """Zero-shot accuracy of each template on each split, best on train first."""
    results = []
    for template in templates:
        prompts = [Label(name).prompt(template) for name in names]
        rows = torch.nn.functional.normalize(predictor.embeddings(prompts).float(), dim=-1)
        accuracy = {
            split: round(((x @ rows.T).argmax(1) == gold).float().mean().item(), 4)
            for split, (x, gold) in splits.items()
        }
        results.append({"template": template, **accuracy})
    return sorted(results, key=lambda r: -r["train"])


def report(results: list[dict]) -> str:
    """Every template's accuracies, then the chosen one beside the default and the bare name."""
    chosen, by_template = results[0], {r["template"]: r for r in results}
    lines = ["| template | train (selects) | test |", "|---|---|---|"]
    for r in results:
        mark = " (default)" if r["template"] == DEFAULT_TEMPLATE else ""
        lines.append(f"| `{r['template']}`{mark} | {r['train']:.1%} | {r['test']:.1%} |")
    lines.append(
        f"\nbest on train: `{chosen['template']}`, test {chosen['test']:.1%}; default "
        f"`{DEFAULT_TEMPLATE}` {by_template[DEFAULT_TEMPLATE]['test']:.1%}; bare name "
        f"{by_template['{name}']['test']:.1%}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Embed once, score every template, print the table, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--base-model", default="", help="default: the embedded MiniLM")
    parser.add_argument("--template", action="append", default=[], help="one more to try")
    args = parser.parse_args(argv)
    labels = read_labels(args.data)
    names = [label.name for label in labels]
    predictor = zero_shot_predictor(
        args.base_model or None, labels, template="{name}", device="cpu", precision="fp32"
    )
    splits = embed_splits(predictor, args.data, names)
    results = score(predictor, splits, names, list(dict.fromkeys([*TEMPLATES, *args.template])))
    print(report(results))
    write_json(args.out, {"data": str(args.data), "templates": results})


if __name__ == "__main__":
    main()
