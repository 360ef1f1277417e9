"""Torch threads for training on CPU, matched to the cores the trainer can actually get.

The trainer runs at niceness 19 so that serving comes first. A niced thread gets ~1.5% of
a core that a normal-priority process keeps busy, and every parallel op waits at its
barrier for the thread stuck there: on 2 cores with one held by another job, 2 threads
train several times slower than 1. So the trainer counts the cores it may use (its CPU
affinity, a cgroup CPU quota), takes off those that other processes keep busy (from
/proc/stat, less its own CPU time), and looks again every few seconds of the run.

The choice is made by pure functions on readings; `ThreadGovernor` takes the readings.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)

RECHECK_S = 5.0  # how often a run looks again; also the window the load is averaged over
FIRST_WINDOW_S = 0.25  # the look before a run: long enough for 25 clock ticks a core
# A core others keep busy less than this share of the time still counts as free: the
# break-even. MiniLM LoRA steps at nice 19 on 2 cores ran 135 samples/s on 2 threads and
# 90 on 1; with a nice-0 process busy a quarter of the time (seen as 0.2-0.25 cores)
# 93 and 91; with one busy all the time 3 and 100. Idle noise (a shell) is well below.
FREE_BELOW = 0.25
CGROUP = Path("/sys/fs/cgroup")
# /proc/stat columns after the cpu name; idle and iowait are the ones nobody used.
IDLE_COLUMNS = (3, 4)


@dataclass(frozen=True)
class CpuReading:
    """What the governor compares between two moments, in seconds."""

    wall: float  # time.monotonic()
    busy: float  # non-idle CPU time of our CPUs since boot, every process together
    own: float  # CPU time this process has used (all its threads)


def busy_seconds(proc_stat: str, cpus: Iterable[int], tick_s: float) -> float:
    """Non-idle CPU time since boot of `cpus`, from the text of /proc/stat."""
    wanted = {f"cpu{cpu}" for cpu in cpus}
    total = 0
    for line in proc_stat.splitlines():
        name, *columns = line.split()
        if name in wanted:
            ticks = [int(column) for column in columns[:8]]  # guest time is inside user
            total += sum(ticks) - sum(ticks[i] for i in IDLE_COLUMNS)
    return total * tick_s


def others_busy(before: CpuReading, after: CpuReading) -> float:
    """Cores kept busy by other processes between two readings (0 when no time passed)."""
    wall = after.wall - before.wall
    if wall <= 0:
        return 0.0
    return max(0.0, (after.busy - before.busy) - (after.own - before.own)) / wall


def quota_cores(cpu_max: str | None) -> float | None:
    """Cores a cgroup v2 `cpu.max` line ("quota period") allows; None when unlimited."""
    if not cpu_max:
        return None
    quota, _, period = cpu_max.strip().partition(" ")
    if quota == "max" or not period:
        return None
    return int(quota) / int(period)


def usable_cores(affinity: int, quota: float | None) -> float:
    """Cores this process may run on: its affinity, within a CPU quota if there is one."""
    return float(affinity) if quota is None else max(0.0, min(float(affinity), quota))


def choose_threads(usable: float, others: float, cap: int = 0) -> int:
    """Threads for the cores left to us: `usable` less the `others` keep busy, at most `cap`.

    Args:
        cap: LIVETUNE_TRAIN_THREADS; 0 = no cap.
    """
    free = math.floor(min(usable, usable - others + FREE_BELOW))
    threads = max(1, free)
    return min(threads, cap) if cap else threads


def read_cgroup_quota(root: Path = CGROUP, group: str | None = None) -> float | None:
    """The tightest CPU quota of `group` (default: this process's) in cores: cgroup v2
    `cpu.max` of it and the groups above it, or cgroup v1 `cpu.cfs_quota_us`; None when
    unlimited or unknown."""
    if group is None:
        lines = (_read(Path("/proc/self/cgroup")) or "").splitlines()
        group = next((line[3:] for line in lines if line.startswith("0::")), "/")
    path = group.lstrip("/")
    folders = [root / path, *(root / path).parents]
    quotas = [quota_cores(_read(f / "cpu.max")) for f in folders if f.is_relative_to(root)]
    v1 = root / "cpu"
    v1_quota = f"{_read(v1 / 'cpu.cfs_quota_us')} {_read(v1 / 'cpu.cfs_period_us')}"
    if v1_quota.split()[0].isdigit():  # -1 or a missing file: no quota
        quotas.append(quota_cores(v1_quota))
    known = [quota for quota in quotas if quota is not None]
    return min(known) if known else None


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def affinity() -> set[int]:
    """The CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return os.sched_getaffinity(0)
    return set(range(os.cpu_count() or 1))


def read_cpu(cpus: Iterable[int]) -> CpuReading | None:
    """Now's reading of `cpus`, or None where there is no /proc/stat (not Linux)."""
    try:
        text = Path("/proc/stat").read_text()
    except OSError:
        return None
    own = os.times()
    tick_s = 1.0 / os.sysconf("SC_CLK_TCK")
    return CpuReading(time.monotonic(), busy_seconds(text, cpus, tick_s), own.user + own.system)


class ThreadGovernor:
    """Keeps torch's intra-op threads matched to the cores left to this process.

    torch.set_num_threads sets OpenMP's count for the calling thread only, so the looks
    happen between training steps on the thread that trains, never on a timer thread.
    """

    def __init__(
        self,
        cap: int = 0,
        interval_s: float = RECHECK_S,
        *,
        cpus: Iterable[int] | None = None,
        quota: float | None = None,
        read: Callable[[Iterable[int]], CpuReading | None] = read_cpu,
        apply: Callable[[int], None] = torch.set_num_threads,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.cap = cap
        self.interval_s = interval_s
        self.cpus = sorted(affinity() if cpus is None else cpus)
        self.usable = usable_cores(len(self.cpus), quota)
        self.read, self.apply, self.clock = read, apply, clock
        self.threads = 0  # what was applied last; 0 = nothing yet
        self.checks = 0
        self._last: CpuReading | None = None
        self._next = 0.0

    def start(self, window_s: float = FIRST_WINDOW_S) -> int:
        """Choose and apply the threads from a short look at the load now."""
        self._last = self.read(self.cpus)
        if self._last is not None and choose_threads(self.usable, 0.0, self.cap) > 1:
            time.sleep(window_s)  # with one thread at most there is nothing to decide
        return self.check()

    def recheck(self) -> int:
        """`check` when `interval_s` has passed since the last look; nearly free otherwise."""
        if self.clock() < self._next:
            return self.threads
        return self.check()

    def check(self) -> int:
        """Measure the load since the last look, and apply the threads it leaves room for."""
        reading = self.read(self.cpus)
        others = others_busy(self._last, reading) if self._last and reading else 0.0
        self._last, self._next = reading, self.clock() + self.interval_s
        self.checks += 1
        threads = choose_threads(self.usable, others, self.cap)
        if threads != self.threads:
            log.info("training on %d thread(s): other processes keep %.1f of %.1f cores busy",
                     threads, others, self.usable)  # fmt: skip
            self.apply(threads)
            self.threads = threads
        return threads


# One training run at a time in a process (the run lock), so one governor: the last started.
_active: ThreadGovernor | None = None


def govern(cap: int = 0, **options) -> ThreadGovernor:
    """Match this process's training threads to the free cores now, and (through
    `recheck`) during the run; `cap` is LIVETUNE_TRAIN_THREADS, 0 = no cap.

    Args:
        options: passed on to ThreadGovernor (tests and benchmarks watch `apply`).
    """
    global _active
    governor = ThreadGovernor(cap, **{"quota": read_cgroup_quota(), **options})
    governor.start()
    _active = governor
    return governor


def release() -> None:
    """Stop governing: torch keeps the thread count it has now."""
    global _active
    _active = None


def active() -> ThreadGovernor | None:
    """The governor of this process's current CPU training run, if any."""
    return _active


def recheck() -> None:
    """The training loop's hook, called every step: a fresh look every RECHECK_S."""
    if _active is not None:
        _active.recheck()
