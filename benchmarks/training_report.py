"""The training benchmark's report: accuracy against the head-only baseline, speed, promotion."""

from __future__ import annotations

TARGET_SPEEDUP = 1.5
TARGET_PROMOTION_S = 60.0


def cell(figure: dict) -> str:
    """A spread as a table cell: the mean, and the range when there were several draws."""
    if len(figure["draws"]) == 1:
        return f"{figure['mean']:.1%}"
    return f"{figure['mean']:.1%} ({figure['min']:.1%}-{figure['max']:.1%})"


def markdown(results: dict) -> str:
    """The accuracy table and the speed and promotion figures beside their baselines."""
    lines = [
        "| examples per class | draws | head-only LR, mean (min-max) "
        "| livetune trainer, mean (min-max) | beats baseline |",
        "|---|---|---|---|---|",
    ]
    for point, ours in results["accuracy"].items():
        base = results["baseline"][point]
        mark = "yes" if ours["mean"] > base["mean"] else "**no**"
        lines.append(f"| {point} | {len(ours['draws'])} | {cell(base)} | {cell(ours)} | {mark} |")
    speed = results["speed"]
    promo = results["promotion"]
    lines += [
        "",
        "| figure | livetune | baseline | ratio | target |",
        "|---|---|---|---|---|",
        f"| LoRA training, samples/s ({speed['samples']} samples, 1 epoch) "
        f"| {speed['ours_samples_per_s']} | {speed['hf_default_samples_per_s']} "
        f"(transformers.Trainer, defaults) | {speed['speedup_vs_hf_default']}x "
        f"| >= {TARGET_SPEEDUP}x |",
        f"| same, against transformers.Trainer bf16 + group_by_length sampling | "
        f"{speed['ours_samples_per_s']} | {speed['hf_tuned_samples_per_s']} | "
        f"{speed['speedup_vs_hf_tuned']}x | |",
        f"| trigger -> {promo['state']}, {promo['per_class']}/class, "
        f"{promo['threads']} thread(s) | {promo['seconds']} s | | "
        f"| <= {TARGET_PROMOTION_S:.0f} s |",
    ]
    return "\n".join(lines)
