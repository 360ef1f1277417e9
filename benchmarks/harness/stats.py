"""The one percentile every benchmark reports, and the CPU meter that tells noise from a result."""

from __future__ import annotations

import math
import os
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from benchmarks.harness.server import server_processes


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile, `q` in 0-100: the smallest value with q% of them at or below it.

    Nearest rank rather than interpolation so that a p99 is a latency some request really
    had. None when there are no values (nothing succeeded).
    """
    if not values:
        return None
    ordered = sorted(values)
    rank = math.ceil(q * len(ordered) / 100)  # q * n first: exact for whole q and n
    return ordered[min(len(ordered), max(1, rank)) - 1]


def rounded(value: float | None, digits: int = 1) -> float | None:
    """`round`, passing None through (a percentile of nothing)."""
    return None if value is None else round(value, digits)


def rate_for(call: Callable[[int], object], batch: int, seconds: float) -> float:
    """Items/s of `call(batch)` run back to back for about `seconds` (at least one call)."""
    done, start = 0, time.perf_counter()
    while True:
        call(batch)
        done += batch
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return done / elapsed


def interleaved_medians(configs: dict[str, Callable], rounds: int) -> dict:
    """Median of `rounds` runs per config, round-robin so load bursts hit every config alike.

    Each config is a `run(seconds)` returning a rate; None asks for its usual length.
    """
    for run in configs.values():  # warm-up: first calls pay for allocator and kernel setup
        run(0.3)
    samples: dict = {name: [] for name in configs}
    for _ in range(rounds):
        for name, run in configs.items():
            samples[name].append(run(None))
    return {name: statistics.median(values) for name, values in samples.items()}


class CpuMeter:
    """Share of the box's CPU taken by us, the server, and everyone else during a phase.

    The shares (1.0 = every core) land in `figures` on exit, so a bad figure can be told
    from a noisy one on a shared machine.
    """

    def __init__(self, server: subprocess.Popen | None = None):
        self.server = server
        self.figures: dict[str, float] = {}

    def __enter__(self) -> CpuMeter:
        self._start = self._sample()
        return self

    def __exit__(self, *exc) -> None:
        end = self._sample()
        if self._start is None or end is None or end[0] <= self._start[0]:
            return
        total, busy, client, server = (b - a for a, b in zip(self._start, end, strict=True))
        total_s = total / os.sysconf("SC_CLK_TCK")
        busy_s = busy / os.sysconf("SC_CLK_TCK")
        self.figures = {
            "others_cpu_share": round(max(0.0, busy_s - client - server) / total_s, 3),
            "client_cpu_share": round(client / total_s, 3),
        }
        if self.server:
            self.figures["server_cpu_share"] = round(server / total_s, 3)

    def _sample(self) -> tuple[float, float, float, float] | None:
        try:
            jiffies = [
                int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
            ]
        except OSError:  # not Linux: no accounting, the figures just stay empty
            return None
        idle = jiffies[3] + jiffies[4]
        own = os.times()
        return sum(jiffies), sum(jiffies) - idle, own.user + own.system, self._server_cpu()

    def _server_cpu(self) -> float:
        if not self.server:
            return 0.0
        return sum(_cpu_seconds(process) for process in server_processes(self.server))


def _cpu_seconds(process: psutil.Process) -> float:
    try:
        times = process.cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return times.user + times.system
