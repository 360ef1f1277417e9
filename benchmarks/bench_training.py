"""Training benchmark: our trainer against its baselines, in one run.

1. Accuracy on the Banking77 test set after training on 5, 10, 20 examples per class and
   on the full train set, next to the head-only baseline computed here on the same
   samples: scikit-learn's logistic regression (C=10) on frozen mean-pooled embeddings
   of the base model (the issue's 85.2% / 88.4% / 93.0% at 10 / 20 / full).
2. Training speed of the LoRA phase, samples/s: our Trainer against Hugging Face's
   `transformers.Trainer` + the same peft LoRA on the same model, data and batch size,
   once with its defaults (fp32, random batches) and once with bf16 + group_by_length sampling.
3. Time from trigger to promoted adapter: a real TrainingJob (store, registry, gate)
   with the default settings on 20 examples per class, as the Trainer service runs it.

Ratios are what to read: this shared 2-core machine drifts run to run.

Data: Banking77, Casanueva et al. 2020, CC-BY-4.0, read in place from --data.

Usage, from the repository root:
    .venv/bin/python -m benchmarks.bench_training --data ../shared/data/banking77 [--quick]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.harness.data import DEFAULT_DATA, Split, load_split
from benchmarks.harness.report import RESULTS, say, write_json
from benchmarks.training_report import markdown
from training.adapters import attach_lora
from training.backends import open_backends
from training.job import TrainingJob
from training.job_settings import JobSettings
from training.labels import DEFAULT_TEMPLATE, Label
from training.loop import yield_cpu
from training.model import TextClassifier, load_encoder
from training.predictor import Predictor
from training.store import NewSample
from training.trainer import TrainConfig, Trainer

DEFAULT_OUT = RESULTS / "training.json"
SEED = 0
LR_C = 10.0  # reproduces the baseline figures
SPEED_PER_CLASS = 20
ALL_PARTS = {"accuracy", "speed", "promotion"}  # "accuracy" also writes "baseline"


def per_class(labels: list[str], k: int | None, seed: int = SEED) -> list[int]:
    """Indices of k random examples of every label (all of them when k is None)."""
    if k is None:
        return list(range(len(labels)))
    rng, by_label = random.Random(seed), {}
    for i, label in enumerate(labels):
        by_label.setdefault(label, []).append(i)
    return sorted(i for ids in by_label.values() for i in rng.sample(ids, min(k, len(ids))))


def fresh_model(
    names: list[str], config: TrainConfig, base_model: str | None = None, device: str = "cpu"
):
    """Base encoder + zero-shot head + a fresh LoRA: what the first training run starts
    from, on `device`."""
    torch.manual_seed(SEED)
    encoder, tokenizer = load_encoder(base_model or None)
    model = TextClassifier(encoder, len(names))
    labels = [Label(n) for n in names]
    Predictor(model, tokenizer, labels, device="cpu").init_head_from_labels(DEFAULT_TEMPLATE)
    attach_lora(model, config)
    return model.to(device), tokenizer


def model_device(model) -> str:
    """Where `model`'s weights are."""
    return str(next(model.parameters()).device)


def test_accuracy(model, tokenizer, names, texts, labels, precision="auto") -> float:
    """Top-1 accuracy of `model` on `texts`, where the model is (served precision by default)."""
    labels_ = [Label(n) for n in names]
    predictor = Predictor(
        model, tokenizer, labels_, device=model_device(model), precision=precision
    )
    predicted = predictor.probabilities(texts).argmax(-1).tolist()
    return sum(names[p] == y for p, y in zip(predicted, labels)) / len(labels)


def lr_fit(train_x, train_y):
    """The head-only baseline: logistic regression on frozen embeddings."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=LR_C, max_iter=5000).fit(train_x, train_y)


def lr_accuracy(train_x, train_y, test_x, test_y, rows) -> float:
    """Test accuracy of the head-only baseline fitted on `rows` of the train embeddings."""
    fit = lr_fit(train_x[rows], train_y[rows])
    return float((fit.predict(test_x) == test_y).mean())


def head_only_baseline(names, train: Split, test: Split, points) -> dict:
    """Logistic regression on frozen embeddings of the base model, per point and draw."""
    model, tokenizer = fresh_model(names, TrainConfig())
    predictor = Predictor(model, tokenizer, [Label(n) for n in names], device="cpu")
    train_x = predictor.embeddings(train.texts).numpy()
    test_x = predictor.embeddings(test.texts).numpy()
    train_y, test_y = np.array(train.labels), np.array(test.labels)
    results = {}
    for point, draws in points.items():
        scores = []
        for indices in draws:
            scores.append(lr_accuracy(train_x, train_y, test_x, test_y, indices))
        results[point] = spread(scores)
        say(f"head-only logistic regression, {point}: {results[point]}")
    return results


def spread(scores: list[float]) -> dict:
    """Mean, min and max of the draws' scores, and the scores."""
    return {"mean": sum(scores) / len(scores), "min": min(scores), "max": max(scores),
            "draws": scores}  # fmt: skip


def ours_at(names, train: Split, test: Split, draws, config: TrainConfig) -> dict:
    """Our trainer from the zero-shot start on each draw: test accuracy, time and speed."""
    scores, seconds, rates = [], [], []
    for indices in draws:
        model, tokenizer = fresh_model(names, config)
        chosen = train.take(indices)
        result = Trainer(model, tokenizer, names, config).train(chosen.texts, chosen.labels)
        scores.append(test_accuracy(model, tokenizer, names, test.texts, test.labels))
        seconds.append(round(result.seconds, 2))
        lora_s = max(1e-9, result.seconds - result.head_fit_seconds)
        rates.append(round(result.samples_seen / lora_s, 1))
    return {**spread(scores), "train_samples": len(draws[0]), "train_seconds": seconds,
            "lora_samples_per_s": rates}  # fmt: skip


class LossWrapper(nn.Module):
    """The same TextClassifier, with the forward signature transformers.Trainer expects."""

    def __init__(self, model: TextClassifier):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, labels=None, **_):
        logits = self.model(input_ids, attention_mask)
        return {"loss": F.cross_entropy(logits.float(), labels), "logits": logits}


def hf_trainer_rate(names, texts, labels, config: TrainConfig, *, tuned: bool) -> float:
    """samples/s of transformers.Trainer + peft on one epoch of the same data."""
    from transformers import DataCollatorWithPadding, TrainingArguments
    from transformers import Trainer as HFTrainer

    model, tokenizer = fresh_model(names, config)
    index = {n: i for i, n in enumerate(names)}
    encoded = tokenizer(texts, truncation=True, max_length=config.max_tokens)["input_ids"]
    dataset = [{"input_ids": ids, "labels": index[y]} for ids, y in zip(encoded, labels)]
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=config.batch_size,
            num_train_epochs=1,
            learning_rate=config.learning_rate,
            warmup_steps=config.warmup_fraction,  # a float below 1 is a share of the steps
            weight_decay=config.weight_decay,
            bf16=tuned,
            train_sampling_strategy="group_by_length" if tuned else "random",
            use_cpu=True,
            report_to="none",
            save_strategy="no",
            logging_strategy="no",
            disable_tqdm=True,
            dataloader_num_workers=0,
            seed=SEED,
        )
        trainer = HFTrainer(
            model=LossWrapper(model),
            args=args,
            train_dataset=dataset,
            data_collator=DataCollatorWithPadding(tokenizer),
        )
        started = time.perf_counter()
        trainer.train()
        return len(dataset) / (time.perf_counter() - started)


def speed_comparison(names, train: Split, config: TrainConfig, per_class_k: int) -> dict:
    """samples/s of one LoRA epoch: our Trainer, transformers.Trainer plain and tuned."""
    chosen = train.take(per_class(train.labels, per_class_k))
    texts, labels = chosen.texts, chosen.labels
    lora_only = config.model_copy(update={"epochs": 1.0, "min_steps": 0, "head_fit_steps": 0})
    model, tokenizer = fresh_model(names, lora_only)
    result = Trainer(model, tokenizer, names, lora_only).train(texts, labels)
    ours = result.samples_seen / result.seconds
    say(f"our trainer: {ours:.1f} samples/s")
    hf_default = hf_trainer_rate(names, texts, labels, lora_only, tuned=False)
    say(f"transformers.Trainer default: {hf_default:.1f} samples/s")
    hf_tuned = hf_trainer_rate(names, texts, labels, lora_only, tuned=True)
    say(f"transformers.Trainer bf16 + group_by_length sampling: {hf_tuned:.1f} samples/s")
    return {
        "samples": len(texts),
        "ours_samples_per_s": round(ours, 1),
        "hf_default_samples_per_s": round(hf_default, 1),
        "hf_tuned_samples_per_s": round(hf_tuned, 1),
        "speedup_vs_hf_default": round(ours / hf_default, 2),
        "speedup_vs_hf_tuned": round(ours / hf_tuned, 2),
    }


def trigger_to_promotion(names, train: Split, per_class_k: int) -> dict:
    """A real TrainingJob with default settings on k examples per class, timed end to end."""
    chosen = train.take(per_class(train.labels, per_class_k))
    with tempfile.TemporaryDirectory() as tmp:
        # As the Trainer service runs it: default settings, at the lowest CPU priority.
        labels = [Label(n) for n in names]
        settings = JobSettings(labels=labels, data_dir=tmp, validation_percent=20)
        backends = open_backends(settings)
        samples = zip(chosen.texts, chosen.labels, strict=True)
        backends.store.add_samples([NewSample(t, y, source="bench") for t, y in samples])
        yield_cpu(settings.train_nice)
        started = time.perf_counter()
        run = TrainingJob(backends, settings).run("samples")
        seconds = time.perf_counter() - started
        backends.close()
    gate = run.report.get("gate", {})
    say(f"trigger -> {run.state} in {seconds:.1f} s ({run.reason})")
    return {
        "per_class": per_class_k,
        "state": run.state,
        "seconds": round(seconds, 1),
        "train_samples": run.train_samples,
        "validation_samples": run.validation_samples,
        "current_accuracy": gate.get("current_accuracy"),
        "candidate_accuracy": gate.get("candidate_accuracy"),
        "threads": torch.get_num_threads(),
    }


def parse_args(argv):
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--quick", action="store_true", help="5 and 10 per class, small test")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (2 = this box)")
    parser.add_argument("--draws", type=int, default=3, help="random draws per few-shot point")
    parser.add_argument(
        "--parts",
        default="accuracy,speed,promotion",
        help="comma-separated parts to run; the others are read from --out's last run",
    )
    return parser.parse_args(argv)


def main(argv=None) -> None:
    """The parts asked for, the others kept from --out's last run; the report."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    train, test = load_split(args.data, "train"), load_split(args.data, "test")
    names = sorted(set(train.labels))
    if args.quick:
        test = test.take(per_class(test.labels, 10))
    ks = {"5": 5, "10": 10} if args.quick else {"5": 5, "10": 10, "20": 20, "full": None}
    # Few-shot figures swing by a point with the draw of examples: average several draws.
    many = 1 if args.quick else args.draws
    draws = {name: range(1 if k is None else many) for name, k in ks.items()}
    points = {n: [per_class(train.labels, k, seed) for seed in draws[n]] for n, k in ks.items()}
    parts = set(args.parts.split(","))
    earlier = parts != ALL_PARTS and args.out.is_file()
    results = json.loads(args.out.read_text()) if earlier else {}
    config = TrainConfig()
    if "accuracy" in parts:
        results["baseline"] = head_only_baseline(names, train, test, points)
        results["accuracy"] = {}
        for point, indices in points.items():
            results["accuracy"][point] = ours_at(names, train, test, indices, config)
            say(f"livetune trainer, {point}: {results['accuracy'][point]}")
    if "speed" in parts:
        k = 5 if args.quick else SPEED_PER_CLASS
        results["speed"] = speed_comparison(names, train, config, k)
    if "promotion" in parts:
        results["promotion"] = trigger_to_promotion(names, train, 5 if args.quick else 20)
    torch.set_num_threads(args.threads)  # the job capped it for its run
    results["config"] = config.model_dump(mode="json")
    results["quick"] = args.quick
    write_json(args.out, results)
    if set(results) >= ALL_PARTS:
        print(markdown(results))
    else:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
