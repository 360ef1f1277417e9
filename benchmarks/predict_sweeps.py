"""The prediction benchmark's in-process figures: batch-size sweeps and bf16 vs fp32.

Configurations are measured round-robin and summarised by their median (see
harness.stats.interleaved_medians), each sweep under a CPU meter.
"""

from __future__ import annotations

import gc

from benchmarks.harness.data import Split, TextPool
from benchmarks.harness.report import say
from benchmarks.harness.stats import CpuMeter, interleaved_medians, rate_for
from benchmarks.predict_report import agreement
from training.labels import Label
from training.predictor import Predictor, zero_shot_predictor

BARE_TEMPLATE = "{name}"
SERVICE_BATCH = 64  # texts per forward (and per POST) in accuracy passes: the service's cap


def build_predictor(labels: list[Label], template: str, precision: str) -> Predictor:
    """The zero-shot predictor on the CPU, as a worker builds it."""
    return zero_shot_predictor(None, labels, template=template, device="cpu", precision=precision)


def predict_labels(predictor: Predictor, texts: list[str], batch: int = SERVICE_BATCH) -> list[str]:
    """Top-1 labels of `texts`, `batch` rows a forward."""
    predictor.batch_size = batch
    return [p.label for p in predictor.predict(texts)]


def bare_name_labels(labels: list[Label], texts: list[str]) -> list[str]:
    """Top-1 labels by cosine similarity to the bare label names."""
    gc.collect()
    bare = build_predictor(labels, BARE_TEMPLATE, "auto")
    try:
        return predict_labels(bare, texts)
    finally:
        del bare
        gc.collect()


def at_batch(predictor: Predictor, pool: TextPool, batch: int, slice_s: float, rows: int = 0):
    """A timed run of `predictor` on `batch` texts per predict() call, in forwards of `rows`
    (0: exactly one forward of `batch`)."""

    def run(seconds: float | None) -> float:
        predictor.batch_size = rows or batch
        call = lambda n: predictor.predict(pool.take(n))  # noqa: E731
        return rate_for(call, batch, slice_s if seconds is None else seconds)

    return run


def sweep_batch_sizes(
    predictor: Predictor, texts: list[str], sizes: list[int], timing: tuple[int, float], rows=0
) -> dict:
    """Texts/s of predict() per batch size, in forwards of `rows` (0: one forward a call).

    With `rows` the predictor runs as the service runs it: the length sort sees the whole
    batch, so a bigger batch pads less; that is what a worker's adaptive batches of that
    size cost without HTTP in front.

    Args:
        timing: (rounds, seconds a slice).
    """
    rounds, slice_s = timing
    pool = TextPool(texts)
    configs = {b: at_batch(predictor, pool, b, slice_s, rows) for b in sizes}
    with CpuMeter() as cpu:
        rates = interleaved_medians(configs, rounds)
    name = f"as served ({rows}-row forwards)" if rows else "raw"
    for b, texts_per_s in rates.items():
        say(f"  {name} batch {b:>4}: {texts_per_s:8.1f} texts/s")
    best = max(rates, key=rates.get)
    return {
        "forward_rows": rows or "the batch",
        "texts_per_s_by_batch_size": {str(b): round(r, 1) for b, r in rates.items()},
        "best_batch_size": best,
        "best_texts_per_s": round(rates[best], 1),
        "precision": "auto",
        **cpu.figures,
    }


def compare_precisions(
    auto: Predictor, fp32: Predictor, test: Split, batch: int, timing: tuple, sample: int
) -> dict:
    """bf16 autocast vs fp32: throughput at `batch`, and whether the top-1 labels move.

    Args:
        timing: (rounds, seconds a slice) of the throughput figures.
        sample: how many test texts the agreement and accuracy figures are taken on.
    """
    rounds, slice_s = timing
    texts, gold = test.texts[:sample], test.labels[:sample]
    pool = TextPool(test.texts)
    pair = {"auto": auto, "fp32": fp32}
    configs = {name: at_batch(p, pool, batch, slice_s) for name, p in pair.items()}
    with CpuMeter() as cpu:
        rates = interleaved_medians(configs, rounds)
    labels_auto, labels_fp32 = predict_labels(auto, texts), predict_labels(fp32, texts)
    result = {
        "batch_size": batch,
        "auto_dtype": str(auto.dtype).replace("torch.", "") if auto.dtype else "float32",
        "auto_texts_per_s": round(rates["auto"], 1),
        "fp32_texts_per_s": round(rates["fp32"], 1),
        "auto_vs_fp32": round(rates["auto"] / rates["fp32"], 3),
        "agreement_texts": len(texts),
        "agreement_batch_size": SERVICE_BATCH,
        "top1_agreement": round(agreement(labels_auto, labels_fp32), 4),
        "accuracy_auto": round(agreement(labels_auto, gold), 4),
        "accuracy_fp32": round(agreement(labels_fp32, gold), 4),
        **cpu.figures,
    }
    say(
        f"  auto ({result['auto_dtype']}) vs fp32 at batch {batch}: {rates['auto']:.1f} vs "
        f"{rates['fp32']:.1f} texts/s, top-1 agreement {result['top1_agreement']:.2%}"
    )
    return result
