"""The online benchmark's outputs: the learning-curve plot and the markdown table."""

from __future__ import annotations

from pathlib import Path


def plot(results: dict, path: Path) -> None:
    """The learning curve against its baselines, as a PNG at `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve, baseline = results["curve"], results["baselines"]
    fig, ax = plt.subplots(figsize=(8, 5))
    ax.plot(
        [c["samples"] for c in curve],
        [100 * c["accuracy"] for c in curve],
        "o-",
        label="livetune service, through /predict",
    )
    for key, style, label in (
        ("head_only", "s--", "head-only logistic regression, same samples"),
        ("head_only_train_split", "^:", "the same, on their train split only"),
    ):
        lr = sorted((int(n), a) for n, a in baseline.get(key, {}).items() if a is not None)
        if lr:
            ax.plot([n for n, _ in lr], [100 * a for _, a in lr], style, label=label)
    ax.axhline(100 * curve[0]["accuracy"], color="grey", ls=":", label="zero-shot (0 corrections)")
    ax.axhline(
        100 * baseline["head_only_full"],
        color="C3",
        ls="-.",
        label=f"head-only LR, all {results['train_samples']} train samples (offline)",
    )
    ticks = [c["samples"] for c in curve]
    ax.set_xscale("symlog", linthresh=min(t for t in ticks if t) if len(ticks) > 1 else 1)
    ax.set_xticks(ticks, [f"{c['samples']}\n{c['per_class']:g}/label" for c in curve])
    ax.minorticks_off()
    ax.set_xlabel("corrections streamed")
    ax.set_ylabel("test accuracy (%)")
    dataset, labels, texts = results["dataset"], results["n_labels"], results["test_samples"]
    ax.set_title(f"Online learning on {dataset}: {labels} labels, {texts} test texts")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def percent(value: float | None) -> str:
    """A share as 12.3%, or nothing for a missing figure."""
    return "" if value is None else f"{value:.1%}"


SLACK = 0.01  # "never worse": within 1 point of zero-shot and of the head-only baseline


def never_worse(results: dict) -> list[dict]:
    """Per checkpoint: the served accuracy against zero-shot and the head-only regression
    on the same streamed samples, and whether it stays within SLACK of both."""
    zero_shot, head = results["baselines"]["zero_shot"], results["baselines"]["head_only"]
    checks = []
    for point in results["curve"][1:]:
        lr = head.get(str(point["samples"]))
        floor = max(zero_shot, lr if lr is not None else 0.0)
        checks.append({"samples": point["samples"], "accuracy": point["accuracy"],
                       "zero_shot": zero_shot, "head_only": lr,
                       "held": point["accuracy"] >= floor - SLACK})  # fmt: skip
    return checks


def worse_promotions(runs: list[dict]) -> list[dict]:
    """Promotions whose candidate scored below the model it replaced on the held-out
    corrections, with their evidence: how many texts, and the gate's bound if it has one."""
    return [
        {
            key: run.get(key)
            for key in (
                "id",
                "validation_samples",
                "current_accuracy",
                "candidate_accuracy",
                "gate_lower_bound",
                "gate_design",
            )
        }  # fmt: skip
        for run in runs
        if run["state"] == "promoted"
        and run["candidate_accuracy"] is not None
        and run["candidate_accuracy"] < run["current_accuracy"]
    ]


def markdown(results: dict) -> str:
    """The curve as a table, then the baseline on all the data and every training run."""
    baselines = results["baselines"]
    lines = [
        "| corrections | per class | service accuracy | head-only LR | head-only LR, train "
        "split | adapter | waited s (caught up) |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in results["curve"]:
        n = str(c["samples"])
        lr, split = baselines["head_only"].get(n), baselines["head_only_train_split"].get(n)
        caught = "yes" if c["caught_up"] else "no"
        lines.append(
            f"| {n} | {c['per_class']} | {c['accuracy']:.1%} | {percent(lr)} | {percent(split)} "
            f"| {', '.join(c['adapters'])} | {c['waited_s']} ({caught}) |"
        )
    promoted = [r for r in results["runs"] if r["state"] == "promoted"]
    lines += [
        "",
        f"head-only LR on all {results['train_samples']} train samples: "
        f"{results['baselines']['head_only_full']:.1%}; runs: {len(results['runs'])}, "
        f"promoted: {len(promoted)} (the first at "
        f"{results['swaps'].get('first_promotion_at')} corrections), "
        f"swaps seen: {results['swaps']['versions_served']}; "
        f"wall time {results['wall_s']:.0f} s",
    ]
    lines += [
        f"run {r['id']} ({r['trigger']}, {r['gate_design'] or 'no gate'},"
        f" recipe {r.get('recipe') or '-'}, trained on"
        f" {r['train_samples']}, scored {r['validation_samples']}): "
        f"{r['state']} after {r['trigger_to_finish_s']} s, served after "
        f"{r['trigger_to_served_s']} s"
        for r in results["runs"]
    ]
    missed = [c for c in results["never_worse"] if not c["held"]]
    lines.append(
        f"never worse (within {SLACK:.0%} of zero-shot and head-only): "
        + ("held at every checkpoint" if not missed else
           "missed at " + ", ".join(f"{c['samples']} ({c['accuracy']:.1%})" for c in missed))
    )  # fmt: skip
    worse = results["worse_promotions"]
    small = sum(w["validation_samples"] < 100 for w in worse)
    lines.append(
        f"promotions with a worse point estimate than what they replaced: {len(worse)}"
        f" ({small} on fewer than 100 scored texts)"
    )
    lines += [
        f"  run {w['id']}: {w['candidate_accuracy']:.1%} vs {w['current_accuracy']:.1%} on "
        f"{w['validation_samples']} scored texts ({w['gate_design']}),"
        f" bound {w['gate_lower_bound']}"
        for w in worse
    ]
    return "\n".join(lines)
