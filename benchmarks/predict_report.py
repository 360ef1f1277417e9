"""The prediction benchmark's report: ratios, targets, and the markdown for docs/benchmarks.md."""

from __future__ import annotations

import os
import statistics

from benchmarks.harness.report import met, share, table, versus
from training.labels import DEFAULT_TEMPLATE

TARGET_SERVICE_VS_RAW = 0.9
TARGET_SERVICE_VS_NAIVE = 3.0
TARGET_ACCURACY = 0.65
TARGET_SERVICE_VS_AS_SERVED = 0.7


def results(meta: dict, in_process: dict, runs: list[dict], gold: list[str], tests: int) -> dict:
    """The JSON results: every phase, the ratios, the accuracies, each service run.

    Args:
        gold: the labels of the texts the accuracies were taken on, out of `tests`.
    """
    service = max(runs, key=lambda run: run["best"]["texts_per_s"])
    figures = {"meta": meta}
    figures.update({k: in_process[k] for k in ("raw", "as_served", "naive", "precision")})
    figures["service"] = {key: value for key, value in service.items() if key != "labels"}
    figures["ratios"] = ratio_figures(
        figures["raw"], figures["as_served"], figures["naive"], service
    )
    figures["accuracy"] = accuracy_figures(in_process, runs[0]["labels"], gold, tests)
    figures["service_runs"] = [{k: v for k, v in run.items() if k != "labels"} for run in runs]
    return figures


def agreement(a: list[str], b: list[str]) -> float:
    """Share of positions where the two label lists agree."""
    return sum(x == y for x, y in zip(a, b, strict=True)) / len(a)


def accuracy_figures(in_process: dict, service: list[str], gold: list[str], tests: int) -> dict:
    """Zero-shot accuracy through the service, in-process, and with the bare label names."""
    template = in_process["template_labels"]
    return {
        "texts": len(gold),
        "full_test_set": len(gold) == tests,
        "service": round(agreement(service, gold), 4),
        "in_process_template": round(agreement(template, gold), 4),
        "bare_names": round(agreement(in_process["bare_labels"], gold), 4),
        "service_vs_in_process_agreement": round(agreement(service, template), 4),
        "template": DEFAULT_TEMPLATE,
        "target_service": TARGET_ACCURACY,
    }


def ratio_figures(raw: dict, as_served: dict, naive: dict, service: dict) -> dict:
    """The best service throughput over each baseline, against its target."""
    best = service["best"]["texts_per_s"]
    vs_raw, vs_naive = best / raw["best_texts_per_s"], best / naive["texts_per_s"]
    return {
        "service_vs_raw": round(vs_raw, 3),
        "service_vs_raw_target": TARGET_SERVICE_VS_RAW,
        "service_vs_raw_met": vs_raw >= TARGET_SERVICE_VS_RAW,
        "service_vs_naive": round(vs_naive, 3),
        "service_vs_naive_target": TARGET_SERVICE_VS_NAIVE,
        "service_vs_naive_met": vs_naive >= TARGET_SERVICE_VS_NAIVE,
        "raw_best_vs_naive": round(raw["best_texts_per_s"] / naive["texts_per_s"], 3),
        "service_vs_as_served": round(best / as_served["best_texts_per_s"], 3),
        "as_served_vs_raw": round(as_served["best_texts_per_s"] / raw["best_texts_per_s"], 3),
    }


def markdown(results: dict) -> str:
    """The figures table, one concurrency table per service run, and the noise note."""
    header = ("Figure", "Value", "Baseline", "Ratio", "Target")
    parts = [table(header, throughput_rows(results) + quality_rows(results))]
    for run in results["service_runs"]:
        levels = [*run["by_concurrency"], {**run["first_level_after_load"], "after": True}]
        parts += ["", f"{workers_name(run)}:", "", level_table(levels)]
    return "\n".join([*parts, "", noise_note(results)])


def workers_name(run: dict) -> str:
    """How a service run reads: 2 workers x 1 torch thread."""
    workers, threads = run["workers"], run["torch_threads_per_worker"]
    return f"{workers} worker{'s' * (workers > 1)} x {threads} torch thread{'s' * (threads > 1)}"


def throughput_rows(results: dict) -> list[tuple]:
    """Each throughput figure beside its baseline: in-process first, then the service."""
    return in_process_rows(results) + service_rows(results)


def in_process_rows(results: dict) -> list[tuple]:
    """The raw best against naive, bf16 against fp32, as served against raw."""
    raw, naive, prec, served = (results[k] for k in ("raw", "naive", "precision", "as_served"))
    agreement = f"top-1 agreement {prec['top1_agreement']:.1%} ({prec['agreement_texts']} texts)"
    served_name = (
        f"In-process as served: best batch ({served['best_batch_size']}) sorted, "
        f"in {served['forward_rows']}-row forwards"
    )
    return [
        versus(
            f"Raw `Predictor.predict`, best batch ({raw['best_batch_size']})",
            *(raw["best_texts_per_s"], naive["texts_per_s"], "naive, 1 text/forward"),
        ),
        versus(
            f"{prec['auto_dtype']} autocast at batch {prec['batch_size']}",
            *(prec["auto_texts_per_s"], prec["fp32_texts_per_s"], "fp32"),
            target=agreement,
        ),
        versus(served_name, served["best_texts_per_s"], raw["best_texts_per_s"], "raw best"),
    ]


def service_rows(results: dict) -> list[tuple]:
    """Each service run against the raw best; the best run against every baseline."""
    raw_best, best = results["raw"]["best_texts_per_s"], results["service"]
    service_best, ratios = best["best"]["texts_per_s"], results["ratios"]
    vs_raw = f">= {TARGET_SERVICE_VS_RAW:g} {met(ratios['service_vs_raw_met'])}"
    vs_naive = f">= {TARGET_SERVICE_VS_NAIVE:g} {met(ratios['service_vs_naive_met'])}"
    runs = [
        versus(
            f"Service, 1 text/request, {workers_name(run)}, "
            f"best concurrency ({run['best']['concurrency']})",
            *(run["best"]["texts_per_s"], raw_best, "raw best"),
        )
        for run in results["service_runs"]
    ]
    naive, served = results["naive"]["texts_per_s"], results["as_served"]["best_texts_per_s"]
    return [
        *runs,
        versus(
            f"Service, best of the above ({workers_name(best)})",
            *(service_best, raw_best, "raw best"),
            target=vs_raw,
        ),
        versus("Service vs no batching", service_best, naive, "naive", target=vs_naive),
        versus(
            "Service vs in-process as served (what HTTP costs)",
            *(service_best, served, "as served"),
        ),
        paired_row(best),
    ]


def paired_row(run: dict) -> tuple:
    """The best run against the in-process figure, slice for slice in turns."""
    paired = run["paired"]
    median = statistics.median(pair["service"] for pair in paired["pairs"])
    model = statistics.median(pair["in_process"] for pair in paired["pairs"])
    ratio = paired["median_ratio"]
    return (
        f"Same, paired slices in turns ({len(paired['pairs'])} pairs, {paired['clients']} "
        f"clients vs batch {paired['batch']})",
        f"{median:.0f} texts/s",
        f"as served: {model:.0f} texts/s",
        f"{ratio:.2f}x (median pair)",
        f">= {TARGET_SERVICE_VS_AS_SERVED:g} {met(ratio >= TARGET_SERVICE_VS_AS_SERVED)}",
    )


def quality_rows(results: dict) -> list[tuple]:
    """The best run's latency, and the zero-shot accuracy beside the bare label names."""
    acc, service = results["accuracy"], results["service"]
    best = service["best"]
    latency = (
        f"Service latency at concurrency {best['concurrency']}, {workers_name(service)}",
        f"p50 {best['p50_ms']} ms, p99 {best['p99_ms']} ms",
        *("", "", ""),
    )
    accuracy = (
        f"Zero-shot accuracy via /predict ({acc['texts']} test texts)",
        f"{acc['service']:.1%}",
        f"bare label names: {acc['bare_names']:.1%}",
        f"{100 * (acc['service'] - acc['bare_names']):+.1f} pts",
        f">= {TARGET_ACCURACY:.0%} {met(acc['service'] >= TARGET_ACCURACY)}",
    )
    return [latency, accuracy]


def level_table(levels: list[dict]) -> str:
    """Throughput, latency, errors and CPU shares per concurrency level of one run."""
    header = ("Concurrency", "texts/s", "p50 ms", "p99 ms", "errors", "client CPU", "others' CPU")
    rows = [
        (
            f"{level['concurrency']} (again, after the load)"
            if level.get("after")
            else level["concurrency"],
            f"{level['texts_per_s']:,.0f}",
            *(level["p50_ms"], level["p99_ms"], level["errors"]),
            share(level.get("client_cpu_share")),
            share(level.get("others_cpu_share")),
        )
        for level in levels
    ]
    return table(header, rows)


def noise_note(results: dict) -> str:
    """How much CPU other processes took while the in-process figures were taken."""
    return (
        f"Other processes took {share(results['raw'].get('others_cpu_share'))} of the CPU "
        f"during the batch-size sweep and {share(results['precision'].get('others_cpu_share'))} "
        f"during bf16 vs fp32 (100% = all {os.cpu_count()} cores). Over HTTP the load "
        "generator (client CPU) shares those cores with the server."
    )
