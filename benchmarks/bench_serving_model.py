"""Serving-side model speed on the CPU: LoRA merged into the base weights, and int8
dynamic quantisation of the encoder's linear layers, against LoRA run per forward.

One run, in-process, on the embedded all-MiniLM-L6-v2 with a real adapter trained here
(`--per-class` Banking77 corrections a label, the trainer's defaults):

1. LoRA per forward (LIVETUNE_MERGE_ADAPTER=false): base weights + LoRA applied per
   forward, `precision` auto (bf16 autocast where the CPU has it), batches of `--batch`
   texts in 16-row forwards, as a worker runs them;
2. merged, as a worker serves it by default (LIVETUNE_MERGE_ADAPTER, service/merged.py):
   the same adapter merged into a buffer copy of the weights (W + B A x scale), its LoRA
   layers off, no LoRA matmuls per forward; also the time a swap spends merging, off the
   lock;
3. merged + int8: torch's dynamic quantisation of every nn.Linear of the encoder;

each with throughput (texts/s, medians of round-robin slices: a shared machine's load
hits every variant alike) and top-1 agreement with the fp32 unmerged model on the
Banking77 test set, plus its accuracy. The issue's bar: keep an option only at >= 99.5%
agreement.

Data: Banking77, Casanueva et al. 2020, CC-BY-4.0, read in place from --data.

Usage, from the repository root:
    .venv/bin/python -m benchmarks.bench_serving_model --data ../shared/data/banking77
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch

from benchmarks.harness.data import DEFAULT_DATA, TextPool, load_split, read_labels
from benchmarks.harness.report import RESULTS, say, table, write_json
from benchmarks.harness.stats import CpuMeter, interleaved_medians, rate_for
from service.merged import MergedWeights
from training.adapters import attach_lora
from training.labels import DEFAULT_TEMPLATE
from training.predictor import Predictor, zero_shot_predictor
from training.trainer import TrainConfig, Trainer


def trained_predictor(data: Path, per_class: int, precision: str) -> tuple[Predictor, dict]:
    """The zero-shot predictor with a LoRA adapter trained on `per_class` texts a label."""
    labels = read_labels(data)
    train = load_split(data, "train", [label.name for label in labels]).shuffled(0)
    train = train.per_label(per_class)
    predictor = zero_shot_predictor(None, labels, template=DEFAULT_TEMPLATE, device="cpu",
                                    precision=precision)  # fmt: skip
    config = TrainConfig()
    attach_lora(predictor.model, config)
    started = time.perf_counter()
    result = Trainer(predictor.model, predictor.tokenizer, [x.name for x in labels], config).train(
        train.texts, train.labels
    )
    predictor.model.eval()
    seconds = round(time.perf_counter() - started, 1)
    return predictor, {"train_samples": len(train.texts), "train_s": seconds, "steps": result.steps}


def merged_copy(predictor: Predictor) -> tuple[Predictor, float]:
    """A copy serving the adapter as a worker does by default (service/merged.py): merged
    into a buffer copy of the weights, its LoRA layers off; and the seconds the merge took
    (a swap pays them off the request path)."""
    clone = copy.copy(predictor)
    clone.model = copy.deepcopy(predictor.model)
    encoder, merged = clone.model.encoder, MergedWeights()
    started = time.perf_counter()
    weights = merged.merge(encoder, encoder.active_adapter)
    seconds = time.perf_counter() - started
    merged.load(encoder, weights)
    return clone, seconds


def int8_copy(predictor: Predictor) -> Predictor:
    """A merged copy whose encoder's nn.Linear layers run int8 (dynamic quantisation), in fp32."""
    clone = copy.copy(predictor)
    clone.model = copy.deepcopy(predictor.model)
    clone.model.encoder = torch.ao.quantization.quantize_dynamic(
        clone.model.encoder.merge_and_unload(), {torch.nn.Linear}, dtype=torch.qint8
    )
    clone.dtype = None  # int8 kernels compute in fp32: no bf16 autocast around them
    return clone


def timed(predictor: Predictor, pool: TextPool, batch: int, slice_s: float):
    """A `run(seconds)` for interleaved_medians: texts/s of `batch`-text predict() calls."""
    return lambda seconds: rate_for(
        lambda n: predictor.predict(pool.take(n)), batch, seconds or slice_s
    )


def labels_of(predictor: Predictor, texts: list[str]) -> list[str]:
    out = []
    for start in range(0, len(texts), 64):
        out += [p.label for p in predictor.predict(texts[start : start + 64])]
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--per-class", type=int, default=10)
    parser.add_argument("--batch", type=int, default=64, help="texts per predict() call")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--slice-s", type=float, default=2.0)
    parser.add_argument("--out", type=Path, default=RESULTS / "serving-model.json")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    served, training = trained_predictor(args.data, args.per_class, "auto")
    say(f"adapter trained: {training}")
    fp32 = copy.copy(served)
    fp32.dtype = None
    merged, merge_s = merged_copy(served)
    quantised = int8_copy(served)
    variants = {"LoRA per forward": served, "merged": merged, "merged + int8": quantised}
    names = [label.name for label in served.labels]
    test = load_split(args.data, "test", names)
    pool = TextPool(test.texts)
    configs = {name: timed(p, pool, args.batch, args.slice_s) for name, p in variants.items()}
    with CpuMeter() as cpu:
        rates = interleaved_medians(configs, args.rounds)
    reference = labels_of(fp32, test.texts)
    rows, results = [], {}
    for name, predictor in variants.items():
        got = labels_of(predictor, test.texts)
        agree = sum(a == b for a, b in zip(got, reference)) / len(got)
        accuracy = sum(a == y for a, y in zip(got, test.labels)) / len(got)
        results[name] = {
            "texts_per_s": round(rates[name], 1),
            "top1_agreement_fp32": round(agree, 4),
            "accuracy": round(accuracy, 4),
        }
        rows.append((name, f"{rates[name]:.0f}", f"{rates[name] / rates['LoRA per forward']:.2f}x",
                     f"{agree:.2%}", f"{accuracy:.1%}"))  # fmt: skip
    figures = {
        "training": training,
        "batch": args.batch,
        "merge_ms": round(1e3 * merge_s, 1),
        "variants": results,
        "fp32_accuracy": round(
            sum(a == y for a, y in zip(reference, test.labels)) / len(reference), 4
        ),
        "cpu": cpu.figures,
    }
    write_json(args.out, figures)
    columns = ("variant", "texts/s", "vs LoRA per forward", "top-1 agreement with fp32", "accuracy")
    print(table(columns, rows))
    merge_ms = figures["merge_ms"]
    print(f"\nmerging the LoRA into the weights: {merge_ms} ms (a swap pays it, off the lock)")
    print(f"CPU shares meanwhile: {figures['cpu']}")
    return figures


if __name__ == "__main__":
    main()
