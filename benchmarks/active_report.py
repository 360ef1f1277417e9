"""The active-learning benchmark's outputs: the figures and the markdown tables."""

from __future__ import annotations

from pathlib import Path

from benchmarks.harness.report import table
from benchmarks.online_report import percent


def _axes(results: dict, title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    ax.set_xlabel("labels spent (per class)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return plt, fig, ax


def _ticks(ax, points: list[int], n_labels: int) -> None:
    ax.set_xticks(points, [f"{p}\n{p / n_labels:g}/label" for p in points])


def plot(results: dict, path: Path) -> None:
    """Both arms of the REST phase and the head-only baseline, as a PNG at `path`."""
    name, n = results["dataset"], results["n_labels"]
    plt, fig, ax = _axes(results, f"Active learning on {name} through the REST API")
    queue = f"review queue ({results['strategy']}, {results['random_share']:.0%} random"
    pace = results.get("pace")
    queue += f", trainer caught up every {pace} labels)" if pace else ")"
    for arm, style, label in (("queue", "o-", queue), ("random", "s-", "random order")):
        curve = results.get(arm, {}).get("curve", [])
        ax.plot([c["samples"] for c in curve], [100 * c["accuracy"] for c in curve], style,
                label=f"livetune service, {label}")  # fmt: skip
    lr = sorted((int(k), a) for k, a in results.get("head_only", {}).items() if a is not None)
    ax.plot([k for k, _ in lr], [100 * a for _, a in lr], "^:", label="head-only LR, random order")
    _ticks(ax, results["points"], n)
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_offline(results: dict, path: Path) -> None:
    """Every ranking's offline curve, as a PNG at `path`."""
    name, n = results["dataset"], results["n_labels"]
    plt, fig, ax = _axes(results, f"Rankings on {name}, offline (head-only LR as the learner)")
    for ranking, curve in results["offline"].items():
        points = sorted((int(k), a) for k, a in curve.items() if a is not None)
        style = "k--" if ranking == "random" else "o-"
        ax.plot([k for k, _ in points], [100 * a for _, a in points], style, label=ranking)
    _ticks(ax, [p for p in results["points"] if p], n)
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def offline_markdown(results: dict) -> str:
    """One row per ranking: accuracy at each checkpoint, and its gain over random."""
    offline, n = results["offline"], results["n_labels"]
    points = sorted({int(k) for curve in offline.values() for k in curve})
    random = offline["random"]
    rows = []
    for ranking, curve in offline.items():
        cells = [gain(curve[str(p)], random[str(p)]) for p in points]
        rows.append((ranking, *cells))
    return table(("ranking", *[f"{p} ({p / n:g}/label)" for p in points]), rows)


def gain(value: float | None, random: float | None) -> str:
    """An accuracy and its gain over random order, in points."""
    if value is None or random is None:
        return percent(value)
    return f"{percent(value)} ({100 * (value - random):+.1f})"


def markdown(results: dict) -> str:
    """Each checkpoint: the queue, random order, the gap, and the head-only baseline."""
    queue = {c["samples"]: c for c in results["queue"]["curve"]}
    random = {c["samples"]: c for c in results["random"]["curve"]}
    rows = []
    for point in results["points"]:
        q, r = queue.get(point), random.get(point)
        if q is None or r is None:
            continue
        gap = 100 * (q["accuracy"] - r["accuracy"])
        rows.append((point, f"{point / results['n_labels']:g}", percent(r["accuracy"]),
                     percent(q["accuracy"]), f"{gap:+.1f}",
                     percent(results.get("head_only", {}).get(str(point))),
                     ", ".join(q["adapters"])))  # fmt: skip
    header = ("labels", "per class", "random order", "review queue", "queue - random (pts)",
              "head-only LR (random)", "queue's adapter")  # fmt: skip
    return table(header, rows)
