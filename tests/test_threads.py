"""Training threads: matched to the cores other processes leave free, and kept so mid-run."""

from __future__ import annotations

import functools

import pytest
import torch

from tests.factories import tiny_job_settings, toy_samples
from training import threads
from training.backends import open_backends
from training.job import TrainingJob
from training.store import NewSample
from training.threads import (
    CpuReading,
    ThreadGovernor,
    busy_seconds,
    choose_threads,
    others_busy,
    quota_cores,
    read_cgroup_quota,
    usable_cores,
)

# user nice system idle iowait irq softirq steal guest guest_nice, in clock ticks
PROC_STAT = """cpu  400 0 100 1000 20 0 10 0 50 0
cpu0 100 0 50 400 10 0 5 0 50 0
cpu1 300 0 50 600 10 0 5 0 0 0
intr 12345 0 0
ctxt 999
"""


@pytest.fixture(autouse=True)
def no_governor_left():
    """Each test starts and ends without a governor and with the suite's one thread."""
    yield
    threads.release()
    torch.set_num_threads(1)


def test_busy_time_counts_the_chosen_cpus_less_idle_and_iowait():
    assert busy_seconds(PROC_STAT, [0], tick_s=0.01) == pytest.approx(1.55)  # guest is in user
    assert busy_seconds(PROC_STAT, [1], tick_s=0.01) == pytest.approx(3.55)
    assert busy_seconds(PROC_STAT, [0, 1], tick_s=0.01) == pytest.approx(5.10)
    assert busy_seconds(PROC_STAT, [7], tick_s=0.01) == 0


def test_others_busy_leaves_out_this_process_s_own_cpu_time():
    before = CpuReading(wall=100.0, busy=50.0, own=10.0)
    # 10 s in which the CPUs were busy 15 CPU-seconds, 6 of them ours: 0.9 cores are others'.
    assert others_busy(before, CpuReading(110.0, 65.0, 16.0)) == pytest.approx(0.9)
    assert others_busy(before, CpuReading(110.0, 60.0, 20.0)) == 0  # tick rounding
    assert others_busy(before, before) == 0  # no time passed


@pytest.mark.parametrize(
    ("cpu_max", "cores"),
    [
        ("max 100000", None),
        ("150000 100000", 1.5),
        ("50000 100000\n", 0.5),
        ("", None),
        (None, None),
    ],
)
def test_a_cgroup_v2_quota_in_cores(cpu_max, cores):
    assert quota_cores(cpu_max) == cores


def test_the_tightest_quota_of_the_group_its_parents_and_cgroup_v1(tmp_path):
    (tmp_path / "app" / "trainer").mkdir(parents=True)
    (tmp_path / "app" / "trainer" / "cpu.max").write_text("max 100000\n")
    assert read_cgroup_quota(tmp_path, group="/app/trainer") is None
    (tmp_path / "cpu.max").write_text("300000 100000\n")
    (tmp_path / "app" / "cpu.max").write_text("150000 100000\n")
    assert read_cgroup_quota(tmp_path, group="/app/trainer") == 1.5
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert read_cgroup_quota(tmp_path, group="/app/trainer") == 0.5
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")  # v1 for "no quota"
    assert read_cgroup_quota(tmp_path, group="/app/trainer") == 1.5


@pytest.mark.parametrize(
    ("affinity", "quota", "usable"), [(4, None, 4.0), (4, 1.5, 1.5), (2, 8.0, 2.0)]
)
def test_usable_cores_are_the_affinity_within_the_quota(affinity, quota, usable):
    assert usable_cores(affinity, quota) == usable


# (usable cores, cores others keep busy, cap, threads)
CHOICES = [
    (2, 0.0, 0, 2),  # an idle 2-core host: both
    (2, 1.0, 0, 1),  # one core held by another job: one thread, not a starved second
    (2, 0.2, 0, 2),  # a little background noise still counts as free
    (2, 0.5, 0, 1),  # half a core taken is not a core for a niced thread
    (2, 2.0, 0, 1),  # everything taken: one thread, whatever it gets
    (8, 3.0, 0, 5),
    (8, 0.0, 4, 4),  # LIVETUNE_TRAIN_THREADS caps it
    (8, 6.0, 4, 2),  # and does not force threads onto busy cores
    (2, 0.0, 1, 1),
    (1.5, 0.0, 0, 1),  # a quota of 1.5 cores
    (0.5, 0.0, 0, 1),
]


@pytest.mark.parametrize(("usable", "others", "cap", "expected"), CHOICES)
def test_threads_match_the_cores_others_leave_free(usable, others, cap, expected):
    assert choose_threads(usable, others, cap) == expected


class FakeHost:
    """Readings of a 2-CPU host whose other processes keep `others` cores busy."""

    def __init__(self):
        self.now, self.busy, self.own, self.others = 0.0, 0.0, 0.0, 0.0
        self.applied = []

    def advance(self, seconds: float, ours: float = 2.0) -> None:
        self.now += seconds
        self.own += ours * seconds
        self.busy += (ours + self.others) * seconds

    def read(self, cpus):
        return CpuReading(self.now, self.busy, self.own)

    def governor(self, cap: int = 0) -> ThreadGovernor:
        options = dict(read=self.read, apply=self.applied.append, clock=lambda: self.now)
        return ThreadGovernor(cap, 5.0, cpus=[0, 1], **options)


def test_the_governor_follows_the_load_at_most_once_an_interval():
    host = FakeHost()
    governor = host.governor()
    assert governor.start(window_s=0) == 2 and host.applied == [2]
    host.others = 1.0  # another job takes a core
    host.advance(4.0)
    assert governor.recheck() == 2 and governor.checks == 1  # not due yet
    host.advance(1.5)
    assert governor.recheck() == 1 and host.applied == [2, 1]
    host.advance(6.0, ours=1.0)
    assert governor.recheck() == 1 and host.applied == [2, 1]  # applied only on a change
    host.others = 0.0  # the job ended
    host.advance(6.0, ours=1.0)
    assert governor.recheck() == 2 and host.applied == [2, 1, 2]


def test_the_cap_bounds_the_governor_and_without_proc_stat_it_uses_the_cores():
    host = FakeHost()
    assert host.governor(cap=1).start(window_s=0) == 1
    blind = ThreadGovernor(0, cpus=[0, 1, 2], read=lambda cpus: None, apply=host.applied.append)
    assert blind.start() == 3 and blind.recheck() == 3


@pytest.fixture
def tiny_job(tmp_path, tiny_model_dir):
    """A TrainingJob on the tiny model with enough toy corrections for a run."""

    def build(**settings) -> TrainingJob:
        settings = tiny_job_settings(
            tmp_path, tiny_model_dir, min_validation_samples=10, **settings
        )
        backends = open_backends(settings)
        samples = [NewSample(text, label, source="test") for text, label in toy_samples(120)]
        backends.store.add_samples(samples)
        built.append(backends)
        return TrainingJob(backends, settings)

    built = []
    yield build
    for backends in built:
        backends.close()


def test_a_training_run_looks_again_every_interval_and_ends_on_a_sane_count(tiny_job, monkeypatch):
    host = FakeHost()
    options = dict(read=host.read, interval_s=0.0, cpus=[0, 1], quota=None)
    governed = functools.partial(threads.govern, **options)
    monkeypatch.setattr(threads, "govern", governed)
    steps = []
    real_recheck = ThreadGovernor.recheck

    def recheck(governor):
        steps.append(governor.threads)
        host.others = 1.0 if len(steps) > 3 else 0.0  # a busy job starts during the run
        host.advance(1.0, ours=governor.threads)
        return real_recheck(governor)

    monkeypatch.setattr(ThreadGovernor, "recheck", recheck)
    run = tiny_job(gate_folds=0).run("manual")  # one training: a holdout gate, no folds
    assert run.state in ("promoted", "rejected"), run.reason
    assert len(steps) == run.report["train"]["steps"] > 3
    governor = threads.active()
    assert governor.checks == len(steps) + 1  # the look before the run, then every step
    assert steps[:4] == [2, 2, 2, 2] and steps[-1] == 1
    assert torch.get_num_threads() == governor.threads == 1


def test_train_threads_caps_a_real_run(tiny_job):
    run = tiny_job(train_threads=1).run("manual")
    assert run.state in ("promoted", "rejected"), run.reason
    assert threads.active().cap == 1
    assert torch.get_num_threads() == 1
