"""Which LIVETUNE_LABEL_TEMPLATE starts a label set best: zero-shot accuracy per template.

The head starts as the embedding of each label's prompt (the template around the
humanised name), so the template decides the zero-shot accuracy. This embeds the train
and test texts once, scores every template with the base model, picks the best on the
*train* split and reports it on the test split, next to the default template and the
bare name. Extra templates: --template '...{name}...' (repeatable).

Any `train.csv` / `test.csv` with `text,category` columns and a `categories.json`
works (Banking77: Casanueva et al. 2020, CC-BY-4.0, read in place, never copied):
    .venv/bin/python benchmarks/bench_templates.py --data ../shared/data/banking77
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

import torch  # noqa: E402
from bench_training import DEFAULT_DATA, read_split, say  # noqa: E402

from training.labels import DEFAULT_TEMPLATE, Label, load_labels  # noqa: E402
from training.predictor import zero_shot_predictor  # noqa: E402

DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "templates.json"
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--base-model", default="", help="default: the embedded MiniLM")
    parser.add_argument("--template", action="append", default=[], help="one more to try")
    args = parser.parse_args(argv)
    labels: list[Label] = load_labels(args.data / "categories.json")
    names = [label.name for label in labels]
    predictor = zero_shot_predictor(
        args.base_model or None, labels, template="{name}", device="cpu", precision="fp32"
    )
    index = {name: i for i, name in enumerate(names)}
    splits = {}
    for split in ("train", "test"):
        texts, labels_of = read_split(args.data, split)
        say(f"embedding {len(texts)} {split} texts")
        gold = torch.tensor([index[label] for label in labels_of])
        splits[split] = (predictor.embeddings(texts).float(), gold)
    results = []
    for template in dict.fromkeys([*TEMPLATES, *args.template]):
        prompts = [Label(name).prompt(template) for name in names]
        rows = torch.nn.functional.normalize(predictor.embeddings(prompts).float(), dim=-1)
        accuracy = {
            split: round(((x @ rows.T).argmax(1) == gold).float().mean().item(), 4)
            for split, (x, gold) in splits.items()
        }
        results.append({"template": template, **accuracy})
    results.sort(key=lambda r: -r["train"])
    chosen = results[0]
    by_template = {r["template"]: r for r in results}
    print("| template | train (selects) | test |\n|---|---|---|")
    for r in results:
        mark = " (default)" if r["template"] == DEFAULT_TEMPLATE else ""
        print(f"| `{r['template']}`{mark} | {r['train']:.1%} | {r['test']:.1%} |")
    print(
        f"\nbest on train: `{chosen['template']}`, test {chosen['test']:.1%}; default "
        f"`{DEFAULT_TEMPLATE}` {by_template[DEFAULT_TEMPLATE]['test']:.1%}; bare name "
        f"{by_template['{name}']['test']:.1%}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"data": str(args.data), "templates": results}, indent=2))


if __name__ == "__main__":
    main()
