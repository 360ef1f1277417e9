"""One training recipe on the train split the promotion gate leaves, scored on the test set.

The online benchmark's last adapter trains on the corrections outside the gate's
validation share (`LIVETUNE_VALIDATION_PERCENT`, by text hash). This trains one adapter
from scratch on exactly those train-split texts with the given hyper-parameters, and
prints its test accuracy: a few minutes per recipe instead of a 25-minute online run.

    .venv/bin/python -m benchmarks.recipe_probe --data ../shared/data/banking77 \\
        --validation-percent 10 --set epochs=5 --set lora_layers=0

With `--stream N` it takes the first N texts of the online benchmark's stream instead (its
seeded order, split as a run at N would split them); `--pseudo-threshold` adds a
self-training student on the stream's next `--unlabeled` texts (training/self_training.py),
with a teacher trained on the same corrections or on the first `--teacher` of them:
docs/experiments/self-training.md.

Data: Banking77 (Casanueva et al. 2020, CC-BY-4.0), read in place, never copied.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections import Counter
from pathlib import Path

from benchmarks.bench_training import fresh_model, lr_fit, model_device, test_accuracy
from benchmarks.harness.data import DEFAULT_DATA, load_split, read_labels
from training.predictor import resolve_device
from training.split import holdout_percent, split_for, text_key
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
    parser.add_argument("--stream", type=int, default=0,
                        help="only the first N texts of the online benchmark's stream (its"
                             " seeded order), split as the gate would at N (more held out"
                             " while data is scarce); 0 = the whole train set")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="the stream's order")
    parser.add_argument("--base-model", default="", help="LIVETUNE_BASE_MODEL (default embedded)")
    parser.add_argument("--device", default="cpu",
                        help="where every model trains and scores: cpu, cuda or auto (the"
                             " training component runs without the service, so a GPU"
                             " machine needs no bentoml)")  # fmt: skip
    parser.add_argument("--pseudo-threshold", type=float, default=0.0,
                        help="self-training: after training, label the stream's next"
                             " --unlabeled texts (uncorrected traffic) with the model's own"
                             " prediction where its probability is at least this, and"
                             " train again from scratch on both; 0 = off")  # fmt: skip
    parser.add_argument("--unlabeled", type=int, default=3000)
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="self-training rounds: each student is the next round's teacher",
    )
    parser.add_argument("--continue-student", action="store_true",
                        help="self-training: the student goes on from the teacher's weights"
                             " instead of starting afresh")  # fmt: skip
    parser.add_argument("--teacher", type=int, default=0,
                        help="self-training with a teacher trained on the stream's first N"
                             " (as the adapter in service would be), one training of the"
                             " student on corrections + its pseudo-labels")  # fmt: skip
    parser.add_argument("--warm-from", type=int, default=0,
                        help="with --stream: first train on the stream's first N (their gate"
                             " split at N), then go on training that model on the whole"
                             " --stream split, as a warm-started run does")  # fmt: skip
    parser.add_argument("--set", type=setting, action="append", default=[], metavar="KEY=VALUE",
                        help="a TrainConfig field, e.g. epochs=5")  # fmt: skip
    parser.add_argument(
        "--student-set",
        type=setting,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a TrainConfig field of the student only",
    )
    parser.add_argument("--per-label-cap", type=int, default=0,
                        help="self-training: at most the K most confident pseudo-labels a"
                             " label (class-balanced selection); 0 = no cap")  # fmt: skip
    parser.add_argument("--agree-lr", action="store_true",
                        help="self-training: keep a pseudo-label only where a logistic"
                             " regression on frozen base embeddings of the corrections"
                             " agrees")  # fmt: skip
    parser.add_argument("--simcse-steps", type=int, default=0,
                        help="contrastive adaptation first: this many unsupervised"
                             " SimCSE steps (two dropout views of a text are a pair) on"
                             " the LoRA weights, over the --unlabeled texts and the"
                             " corrections")  # fmt: skip
    parser.add_argument("--simcse-lr", type=float, default=1e-3)
    parser.add_argument("--per-label-share", type=float, default=0.0,
                        help="self-training: cap a label's pseudo-labels at this share of"
                             " --unlabeled / labels (overrides --per-label-cap)")  # fmt: skip
    args = parser.parse_args(argv)
    device = str(resolve_device(args.device))  # every model of the probe lives there
    names = [label.name for label in read_labels(args.data)]
    train, test = load_split(args.data, "train"), load_split(args.data, "test")
    percent = args.validation_percent
    unlabeled, truth = [], []
    if args.stream:
        train = train.shuffled(args.seed)
        unlabeled = train.texts[args.stream : args.stream + args.unlabeled]
        truth = train.labels[args.stream : args.stream + args.unlabeled]
        train = train.take(range(min(args.stream, len(train.texts))))
        percent = holdout_percent(len(train.texts), args.validation_percent)
    keep = train.take(
        i for i, text in enumerate(train.texts)
        if split_for(text_key(text), percent) == "train"
    )  # fmt: skip
    config = TrainConfig(**dict(args.set))
    student = config.model_copy(update=dict(args.student_set))
    cap = args.per_label_cap
    if args.per_label_share and unlabeled:
        cap = math.ceil(args.per_label_share * len(unlabeled) / len(names))
    agree_with = None
    if args.agree_lr and unlabeled:  # the base encoder is frozen: one fit serves every round
        agree_with = frozen_lr_labels(names, config, args.base_model, keep, unlabeled, device)
    selection = {"truth": truth, "cap": cap, "student": student, "agree_with": agree_with}
    if args.teacher and args.stream:
        first = split_train(train.take(range(args.teacher)), args.teacher, args.validation_percent)
        teacher, tokenizer = fresh_model(names, config, args.base_model, device)
        Trainer(teacher, tokenizer, names, config).train(first.texts, first.labels)
        report = {
            "teacher": args.teacher,
            "teacher_samples": len(first.texts),
            "teacher_accuracy": round(
                test_accuracy(teacher, tokenizer, names, test.texts, test.labels), 4
            ),
            "train_samples": len(keep.texts),
            "stream": args.stream,
            "set": dict(args.set),
        }
        report["self_training"] = self_train(
            teacher, tokenizer, names, keep, unlabeled, test, config,
            args.pseudo_threshold or 0.95, base_model=args.base_model, **selection,
        )[2]  # fmt: skip
        print(json.dumps(report))
        return
    model, tokenizer = fresh_model(names, config, args.base_model, device)
    started = time.perf_counter()
    adapted = {}
    if args.simcse_steps:
        adapted = simcse(model, tokenizer, unlabeled + keep.texts, args.simcse_steps,
                         args.simcse_lr, config)  # fmt: skip
    if args.warm_from and args.stream:
        first = split_train(
            train.take(range(args.warm_from)), args.warm_from, args.validation_percent
        )
        Trainer(model, tokenizer, names, config).train(first.texts, first.labels)
        print(json.dumps({"warm_from": args.warm_from, "first_samples": len(first.texts),
                          "first_accuracy": round(test_accuracy(
                              model, tokenizer, names, test.texts, test.labels), 4)}))  # fmt: skip
    result = Trainer(model, tokenizer, names, config).train(keep.texts, keep.labels)
    accuracy = test_accuracy(model, tokenizer, names, test.texts, test.labels)
    report = {
        "validation_percent": round(percent, 2), "set": dict(args.set), "stream": args.stream,
        "train_samples": len(keep.texts), "test_accuracy": round(accuracy, 4),
        "test_accuracy_fp32": round(test_accuracy(
            model, tokenizer, names, test.texts, test.labels, precision="fp32"), 4),
        "train_seconds": round(time.perf_counter() - started), "steps": result.steps,
        **adapted,
    }  # fmt: skip
    if args.pseudo_threshold and unlabeled:
        report["self_training"] = []
        for _ in range(args.rounds):  # each round's student teaches the next
            model, tokenizer, found = self_train(
                model, tokenizer, names, keep, unlabeled, test, config, args.pseudo_threshold,
                args.continue_student, args.base_model, **selection,
            )  # fmt: skip
            report["self_training"].append(found)
            print(json.dumps(found), flush=True)
    print(json.dumps(report))


def frozen_lr_labels(names, config, base_model, keep, texts, device="cpu") -> list[str]:
    """The head-only baseline's labels for `texts`, fitted on the corrections `keep`
    (a second view of the data for pseudo-labels)."""
    from training.labels import Label
    from training.predictor import Predictor

    # LoRA B = 0: the base encoder
    base, tokenizer = fresh_model(names, config, base_model, device)
    predictor = Predictor(base, tokenizer, [Label(n) for n in names], device=device)
    fit = lr_fit(predictor.embeddings(keep.texts).numpy(), keep.labels)
    return list(fit.predict(predictor.embeddings(texts).numpy()))


def simcse(model, tokenizer, texts, steps, learning_rate, config, batch_size=64, temperature=0.05):
    """Unsupervised SimCSE (Gao et al. 2021) on the LoRA weights: each text's two dropout
    views are a positive pair, the batch's other texts its negatives. A probe of
    contrastive adaptation on the traffic (issue 17); not part of the service."""
    import random

    import torch
    import torch.nn.functional as F

    from training.predictor import autocast_dtype

    pool = list(dict.fromkeys(texts))
    params = [p for p in model.encoder.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=config.weight_decay)
    device = torch.device(model_device(model))
    dtype = autocast_dtype(device, config.precision)
    rng, losses, started = random.Random(config.seed), [], time.perf_counter()
    model.train()
    for _ in range(steps):
        texts_ = rng.sample(pool, min(batch_size, len(pool)))
        batch = tokenizer(texts_, truncation=True, max_length=config.max_tokens, padding=True,
                          return_tensors="pt")  # fmt: skip
        ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            first, second = model.embed(ids, mask).float(), model.embed(ids, mask).float()
        pairs = torch.arange(len(ids), device=device)  # row i's positive is column i
        loss = F.cross_entropy(first @ second.T / temperature, pairs)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    return {"simcse_steps": steps, "simcse_seconds": round(time.perf_counter() - started),
            "simcse_loss_first_last": [round(sum(losses[:10]) / 10, 4),
                                       round(sum(losses[-10:]) / 10, 4)]}  # fmt: skip


def split_train(split, cursor: int, floor: float):
    """The texts of `split` a run at `cursor` trains on (the rest are held out)."""
    percent = holdout_percent(cursor, floor)
    return split.take(
        i for i, text in enumerate(split.texts) if split_for(text_key(text), percent) == "train"
    )


def self_train(
    model,
    tokenizer,
    names,
    keep,
    unlabeled,
    test,
    config,
    threshold,
    go_on=False,
    base_model="",
    truth=(),
    cap=0,
    student=None,
    agree_with=None,
) -> tuple:
    """Pseudo-label confident uncorrected texts, retrain from scratch on both, score:
    (student, tokenizer, report). `truth` (the texts' real labels) only scores the
    pseudo-labels; `agree_with` keeps only texts it labels as the teacher does; `cap` keeps
    a label's `cap` most confident; `student` its own config."""
    import torch

    from training.labels import Label
    from training.predictor import Predictor

    device = model_device(model)  # the student trains where the teacher did
    predictor = Predictor(model, tokenizer, [Label(n) for n in names], device=device)
    probabilities = predictor.probabilities(unlabeled)
    confidence, best = probabilities.max(-1)
    chosen = torch.nonzero(confidence >= threshold).flatten().tolist()
    if agree_with:
        chosen = [i for i in chosen if agree_with[i] == names[best[i]]]
    if cap:  # the most confident first, at most `cap` a label
        taken = Counter()
        capped = []
        for i in sorted(chosen, key=lambda i: -confidence[i].item()):
            taken[int(best[i])] += 1
            if taken[int(best[i])] <= cap:
                capped.append(i)
        chosen = sorted(capped)
    texts = keep.texts + [unlabeled[i] for i in chosen]
    labels = keep.labels + [names[best[i]] for i in chosen]
    per_label = torch.bincount(best[chosen], minlength=len(names)).tolist() if chosen else []
    student = student or config
    if not go_on:
        model, tokenizer = fresh_model(names, student, base_model, device)
    started = time.perf_counter()
    Trainer(model, tokenizer, names, student).train(texts, labels)
    return model, tokenizer, {"continued": go_on,
        "threshold": threshold, "unlabeled": len(unlabeled), "pseudo_labeled": len(chosen),
        "cap": cap,
        "student_set": dict(set(student.model_dump().items()) - set(config.model_dump().items())),
        "pseudo_accuracy": round(sum(names[best[i]] == truth[i] for i in chosen)
                                 / max(1, len(chosen)), 4) if truth else None,
        "per_label_min_median_max": [min(per_label), sorted(per_label)[len(per_label) // 2],
                                     max(per_label)] if per_label else None,
        "test_accuracy": round(test_accuracy(model, tokenizer, names, test.texts, test.labels), 4),
        "train_seconds": round(time.perf_counter() - started),
    }  # fmt: skip


if __name__ == "__main__":
    main()
