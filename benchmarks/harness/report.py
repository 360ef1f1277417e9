"""How benchmarks report: progress lines, markdown tables of a figure beside its baseline, JSON."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from benchmarks.harness.server import ROOT

RESULTS = ROOT / "benchmarks" / "results"


def say(message: str) -> None:
    """A progress line on stderr, so stdout holds only the report."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def write_json(path: Path, results: dict) -> None:
    """`results` as indented JSON at `path`, written whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")  # a crash never leaves half a file
    tmp.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def table_row(cells: tuple) -> str:
    """One markdown table row."""
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def table(header: tuple, rows: list[tuple]) -> str:
    """A markdown table: `header`, its rule, then `rows`."""
    return "\n".join(table_row(row) for row in [header, ("---",) * len(header), *rows])


def versus(
    figure: str, value: float, baseline: float, baseline_name: str, unit=None, target: str = ""
) -> tuple:
    """A row of (figure, value, baseline, ratio, target): a figure beside its baseline.

    Args:
        unit: formats both numbers (default: `rate`).
    """
    show = unit or rate
    return (
        figure,
        show(value),
        f"{baseline_name}: {show(baseline)}",
        ratio(value, baseline),
        target,
    )


def ratio(value: float, baseline: float) -> str:
    """`value / baseline` as 1.23x."""
    return f"{value / baseline:.2f}x"


def rate(value: float) -> str:
    """Texts per second, no decimals."""
    return f"{value:,.0f} texts/s"


def met(ok: bool) -> str:
    """How a target line reads."""
    return "met" if ok else "MISSED"


def share(value: float | None) -> str:
    """A CPU share as a percentage (n/a when it was not measured)."""
    return "n/a" if value is None else f"{value:.0%}"
