"""New labels at run time: how accuracy on a label added while serving grows with its first
corrections, through the REST API.

Starts the real `bentoml serve` (trainer included) with all but `--new` labels of the data
(picked at random, seeded), streams `--base-per-class` corrections of each of those, and
waits for the trainer. Then adds the held-out labels with `POST /labels` (no restart) and
streams their corrections, 5, 10 and 20 a label (`--per-class`), waiting for the trainer at
each checkpoint. At every checkpoint, and zero-shot right after the labels are added, the
test texts go through /predict: accuracy on the new labels' texts, on the others, and on
all. The baseline of the same run: the head-only logistic regression (bench_training's)
on frozen embeddings of exactly the corrections streamed so far.

Works on any CSV/TSV with a text and a label column. Banking77: Casanueva et al. 2020,
CC-BY-4.0, read in place from --data.

Usage, from the repository root:
    .venv/bin/python -m benchmarks.new_labels --data ../shared/data/banking77
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from benchmarks.harness.data import Split, add_data_arguments
from benchmarks.harness.report import RESULTS, say, table, write_json
from benchmarks.harness.server import running_server
from benchmarks.online import SERVICE_SETTINGS
from benchmarks.online_baselines import head_only
from benchmarks.online_data import load_data
from benchmarks.online_service import Service, stream, wait_caught_up
from training.labels import humanize

FOLLOW_S = 2.0  # every worker follows a label-set change within this long


def accuracies(service: Service, test: Split, new: set[str]) -> dict:
    """Test accuracy through /predict on the new labels' texts, the others', and all."""
    answers = []
    for start in range(0, len(test.texts), 64):
        answers += service.predict(test.texts[start : start + 64])
    hits = [a["label"] == y for a, y in zip(answers, test.labels)]
    on_new = [h for h, y in zip(hits, test.labels) if y in new]
    on_old = [h for h, y in zip(hits, test.labels) if y not in new]
    predicted_new = sum(a["label"] in new for a in answers)
    return {
        "new": sum(on_new) / len(on_new) if on_new else None,
        "old": sum(on_old) / len(on_old) if on_old else None,
        "all": sum(hits) / len(hits),
        "predicted_as_new": predicted_new,  # how often a new label is the answer at all
        "adapters": sorted({a["adapter"] for a in answers}),
    }


def add_labels(service: Service, names: list[str]) -> float:
    """POST /labels for each, then wait until every worker serves the new set; seconds."""
    started = time.monotonic()
    for name in names:
        response = service.http.post("/labels", json={"name": name})
        response.raise_for_status()
    version = response.json()["version"]
    while {w["label_set_version"] for w in service.status()["workers"]} != {version}:
        if time.monotonic() - started > 30:
            raise RuntimeError("the workers never followed the new label set")
        time.sleep(0.1)
    return time.monotonic() - started


def run(args) -> dict:
    train, test = load_data(args)
    train = train.shuffled(args.seed)
    labels = sorted(set(train.labels))
    new = sorted(random.Random(args.seed).sample(labels, args.new))
    old = [name for name in labels if name not in new]
    base = train.per_label(args.base_per_class, old)
    say(f"{len(old)} labels at start, {len(base.texts)} corrections of them; new: {new}")
    points = [int(k) for k in args.per_class.split(",")]
    curve, streamed = [], Split(list(base.texts), list(base.labels))
    with tempfile.TemporaryDirectory(prefix="livetune-new-labels-") as tmp:
        labels_file = Path(tmp) / "labels.json"
        labels_file.write_text(json.dumps(old))
        # The test set goes through this same server: self-training (off here, as when
        # these figures were measured) would learn its texts.
        env = {
            **SERVICE_SETTINGS,
            "LIVETUNE_SELF_TRAINING_THRESHOLD": "0",
            "LIVETUNE_LABELS_FILE": str(labels_file),
        }
        with running_server(Path(tmp), ready_timeout=300, **env) as server:
            service = Service(server.base)
            try:
                stream(service, base)
                wait = wait_caught_up(service, args.catch_up_timeout)
                before = accuracies(service, test.take(
                    [i for i, y in enumerate(test.labels) if y not in new]), set())  # fmt: skip
                say(f"before: {before['all']:.1%} on the {len(old)} labels ({wait})")
                follow_s = add_labels(service, new)
                say(f"{len(new)} labels added; every worker followed in {follow_s:.2f} s")
                done = 0
                for k in [0, *points]:
                    segment = train.per_label(k - done, new, skip=done)
                    done = k
                    if segment.texts:
                        stream(service, segment)
                        streamed.texts += segment.texts
                        streamed.labels += segment.labels
                    wait = wait_caught_up(service, args.catch_up_timeout) if k else {}
                    measured = accuracies(service, test, set(new))
                    curve.append({"per_new_label": k, "streamed": len(streamed.texts),
                                  **measured, **wait})  # fmt: skip
                    say(f"{k} a new label: new {measured['new']:.1%}, old {measured['old']:.1%}"
                        f", all {measured['all']:.1%} by {measured['adapters']}")  # fmt: skip
                runs = len(service.http.get("/adapters").json())
            finally:
                service.close()
    # The baseline on exactly what was streamed up to each checkpoint (a prefix of `streamed`).
    sizes = [point["streamed"] for point in curve if point["per_new_label"]]
    order = Split(streamed.texts, streamed.labels)
    scores = head_only(order, test, sizes, "", lambda n: [True] * n)["all"]
    for point in curve:
        point["head_only_all"] = scores.get(point["streamed"])
    return {
        "dataset": args.data.resolve().name,
        "seed": args.seed,
        "new_labels": new,
        "new_labels_named": [humanize(name) for name in new],
        "old_labels": len(old),
        "base_per_class": args.base_per_class,
        "before": before,
        "follow_s": round(follow_s, 2),
        "curve": curve,
        "adapters_published": runs,
        "service_settings": {k: v for k, v in env.items() if k != "LIVETUNE_LABELS_FILE"},
    }


def markdown(results: dict) -> str:
    rows = [
        (
            point["per_new_label"],
            f"{point['new']:.1%}",
            f"{point['old']:.1%}",
            f"{point['all']:.1%}",
            "" if point.get("head_only_all") is None else f"{point['head_only_all']:.1%}",
        )
        for point in results["curve"]
    ]
    header = ("corrections a new label", "new labels", "other labels", "all", "head-only LR, all")
    return table(header, rows)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_arguments(parser)
    parser.add_argument("--new", type=int, default=5, help="labels held out, then added")
    parser.add_argument("--base-per-class", type=int, default=10,
                        help="corrections of each other label before the new ones")  # fmt: skip
    parser.add_argument("--per-class", default="5,10,20", help="checkpoints a new label")
    parser.add_argument("--catch-up-timeout", type=float, default=1200.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="JSON (default benchmarks/results/...)")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    started = time.monotonic()
    results = run(args)
    results["wall_s"] = round(time.monotonic() - started, 1)
    write_json(args.out or RESULTS / f"new-labels-{results['dataset']}.json", results)
    print(markdown(results))
    return results


if __name__ == "__main__":
    main()
