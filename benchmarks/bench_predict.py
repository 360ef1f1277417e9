"""Prediction benchmark: the real BentoML service against the bare model, as ratios.

One run prints every figure next to its baseline:

1. raw model throughput, `Predictor.predict` in-process, over several batch sizes
   (one forward pass of that many rows per call); bf16 autocast ("auto") against
   fp32 at the best one, with top-1 agreement; and, for comparison, the same
   predictor as the service runs it (the whole batch sorted by length, then cut into
   forwards of its default rows), over several batch sizes ("as served");
2. the service (`bentoml serve service.service:Livetune`, started here as a
   subprocess) over HTTP, one text per request so that adaptive batching does the
   grouping: throughput and p50/p99 latency at several concurrencies, once per API
   worker count in --workers (default: 1, then one per core);
3. the naive baseline: one forward per request, no batching (batch size 1 in 1.);
4. ratios: the best service figure / raw best (target >= 0.9) and / naive (target >= 3),
   and / the best as-served figure (no target: it shows what the HTTP path costs);
5. zero-shot accuracy on the Banking77 test set through POST /predict, next to
   cosine similarity to the bare label names (template "{name}", in-process);
6. everything to a JSON file (--out) and a markdown table on stdout for the README.

The box this was written for is a shared 2-core machine, so absolute times drift
from run to run. In-process configurations are measured round-robin and summarised
by their median; concurrency levels run as a ramp (the batcher has memory, see
measure_http), each as a few slices summarised by their median. Every phase records
how much CPU other processes took meanwhile (`others_cpu_share`, 1.0 = every core)
so a bad figure can be told from a noisy one. The in-process work is done and its
model freed before the server starts, so the two never compete; the HTTP load
generator does share the cores with the server (a lean one, see HttpConnection), and
its share is recorded too. The server runs on the LIVETUNE_* defaults (inherited
LIVETUNE_* variables are dropped) but for WORKERS, with the Banking77 labels and a
temporary data directory.

Data: Banking77, Casanueva et al. 2020, CC-BY-4.0 (train.csv / test.csv with columns
`text,category`, categories.json with the 77 label names). It is read in place from
--data and never copied.

Usage, from the repository root:
    .venv/bin/python benchmarks/bench_predict.py --data /work/shared/data/banking77 [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import gc
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as a script, not only with -m
    sys.path.insert(0, str(REPO_ROOT))

import httpx  # noqa: E402
import psutil  # noqa: E402
import torch  # noqa: E402

from tests.server import log_tail, running_server, server_processes  # noqa: E402
from training.labels import DEFAULT_TEMPLATE, Label, load_labels  # noqa: E402
from training.predictor import (  # noqa: E402
    CPU_BF16_MIN_BATCH,
    Predictor,
    forward_rows,
    zero_shot_predictor,
)
from training.settings import worker_threads  # noqa: E402

DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "banking77"
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "predict.json"
SEED = 77
# The in-process figures use the threads the service gives a single worker (2 on two
# cores), to be comparable.
TORCH_THREADS = worker_threads(1)
BARE_TEMPLATE = "{name}"
SERVICE_BATCH = 64  # texts per POST in the accuracy pass: the service's default cap
TARGET_SERVICE_VS_RAW = 0.9
TARGET_SERVICE_VS_NAIVE = 3.0
TARGET_ACCURACY = 0.65


@dataclass(frozen=True)
class Profile:
    """How long each measurement runs; --quick trades precision for a ~2-3 minute run."""

    raw_rounds: int
    raw_slice_s: float
    http_rounds: int
    http_slice_s: float
    agreement_texts: int
    accuracy_texts: int | None  # None: the whole test set


FULL = Profile(5, 2.0, 3, 5.0, agreement_texts=512, accuracy_texts=None)
QUICK = Profile(2, 0.75, 2, 2.5, agreement_texts=256, accuracy_texts=300)


@dataclass
class Dataset:
    labels: list[Label]
    texts: list[str]  # the test split, shuffled with a fixed seed so any prefix is a sample
    gold: list[str]


def say(message: str) -> None:
    print(message, flush=True)


# --- data ------------------------------------------------------------------------------


def load_dataset(data_dir: Path) -> Dataset:
    """Banking77's labels and test split, read where they lie."""
    labels = load_labels(data_dir / "categories.json")
    with open(data_dir / "test.csv", newline="", encoding="utf-8") as handle:
        rows = [(row["text"], row["category"]) for row in csv.DictReader(handle)]
    unknown = {category for _, category in rows} - {label.name for label in labels}
    if unknown:
        raise SystemExit(
            f"test.csv has categories missing from categories.json: {sorted(unknown)[:5]}"
        )
    random.Random(SEED).shuffle(rows)
    return Dataset(labels, [text for text, _ in rows], [category for _, category in rows])


class TextPool:
    """Endless supply of test texts, so every timed slice sees a mix of lengths."""

    def __init__(self, texts: list[str], start: int = 0):
        self.texts = texts
        self.cursor = start

    def take(self, count: int) -> list[str]:
        out = [self.texts[(self.cursor + i) % len(self.texts)] for i in range(count)]
        self.cursor += count
        return out


# --- CPU accounting --------------------------------------------------------------------


class CpuMeter:
    """Share of the box's CPU taken by us, the server, and everyone else during a phase."""

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


# --- in-process measurements -----------------------------------------------------------


def build_predictor(labels: list[Label], template: str, precision: str) -> Predictor:
    return zero_shot_predictor(None, labels, template=template, device="cpu", precision=precision)


def rate_for(predict: Callable, pool: TextPool, batch: int, seconds: float) -> float:
    """Texts/s of `predict` on consecutive batches for about `seconds` (at least one call)."""
    done, start = 0, time.perf_counter()
    while True:
        predict(pool.take(batch))
        done += batch
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return done / elapsed


def interleaved_medians(configs: dict, rounds: int) -> dict:
    """Median rate per config, measured round-robin so load bursts hit every config alike."""
    for run in configs.values():  # warm-up: first calls pay for allocator and kernel setup
        run(0.3)
    samples: dict = {name: [] for name in configs}
    for _ in range(rounds):
        for name, run in configs.items():
            samples[name].append(run(None))
    return {name: statistics.median(values) for name, values in samples.items()}


def at_batch(
    predictor: Predictor, pool: TextPool, batch: int, slice_s: float, rows: int = 0
) -> Callable:
    """A timed run of `predictor` on `batch` texts per predict() call, in forwards of `rows`
    (0: exactly one forward of `batch`)."""

    def run(seconds: float | None) -> float:
        predictor.batch_size = rows or batch
        return rate_for(predictor.predict, pool, batch, slice_s if seconds is None else seconds)

    return run


def sweep_batch_sizes(
    predictor: Predictor, data: Dataset, sizes: list[int], profile: Profile, rows: int = 0
) -> dict:
    """Texts/s of predict() per batch size, in forwards of `rows` (0: one forward a call).

    With `rows` the predictor runs as the service runs it: the length sort sees the whole
    batch, so a bigger batch pads less; that is what a worker's adaptive batches of that
    size cost without HTTP in front.
    """
    pool = TextPool(data.texts)
    configs = {b: at_batch(predictor, pool, b, profile.raw_slice_s, rows) for b in sizes}
    with CpuMeter() as cpu:
        rates = interleaved_medians(configs, profile.raw_rounds)
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
    auto: Predictor, fp32: Predictor, data: Dataset, batch: int, profile: Profile
) -> dict:
    """bf16 autocast vs fp32: throughput at `batch`, and whether the top-1 labels move."""
    pool = TextPool(data.texts)
    configs = {
        name: at_batch(p, pool, batch, profile.raw_slice_s)
        for name, p in (("auto", auto), ("fp32", fp32))
    }
    with CpuMeter() as cpu:
        rates = interleaved_medians(configs, profile.raw_rounds)
    texts, gold = data.texts[: profile.agreement_texts], data.gold[: profile.agreement_texts]
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


def predict_labels(predictor: Predictor, texts: list[str], batch: int = SERVICE_BATCH) -> list[str]:
    predictor.batch_size = batch
    return [p.label for p in predictor.predict(texts)]


def agreement(a: list[str], b: list[str]) -> float:
    return sum(x == y for x, y in zip(a, b, strict=True)) / len(a)


def accuracy_set(data: Dataset, profile: Profile) -> tuple[list[str], list[str]]:
    n = profile.accuracy_texts or len(data.texts)
    return data.texts[:n], data.gold[:n]


def measure_in_process(data: Dataset, sizes: list[int], profile: Profile) -> dict:
    """Phases 1 and 3, plus the in-process accuracies, all before the server takes the cores."""
    torch.set_num_threads(TORCH_THREADS)
    say("in-process (before the server starts)")
    auto = build_predictor(data.labels, DEFAULT_TEMPLATE, "auto")
    fp32 = build_predictor(data.labels, DEFAULT_TEMPLATE, "fp32")
    raw = sweep_batch_sizes(auto, data, sizes, profile)
    rows = forward_rows(auto.device, 0)
    as_served = sweep_batch_sizes(auto, data, [b for b in sizes if b > 1], profile, rows)
    # An unbatched server runs exactly predict([text]) per request: batch size 1 above.
    naive = {"texts_per_s": raw["texts_per_s_by_batch_size"]["1"], "batch_size": 1}
    # Below CPU_BF16_MIN_BATCH rows "auto" runs fp32 anyway: nothing to compare there.
    batch = max(raw["best_batch_size"], CPU_BF16_MIN_BATCH)
    precision = compare_precisions(auto, fp32, data, batch, profile)
    del fp32
    texts, gold = accuracy_set(data, profile)
    template_labels = predict_labels(auto, texts)
    del auto
    gc.collect()
    bare_labels = bare_name_labels(data.labels, texts)
    say(
        f"  accuracy on {len(texts)} texts: template {agreement(template_labels, gold):.2%}, "
        f"bare names {agreement(bare_labels, gold):.2%}"
    )
    return {
        "raw": raw,
        "as_served": as_served,
        "naive": naive,
        "precision": precision,
        "template_labels": template_labels,
        "bare_labels": bare_labels,
    }


def bare_name_labels(labels: list[Label], texts: list[str]) -> list[str]:
    bare = build_predictor(labels, BARE_TEMPLATE, "auto")
    try:
        return predict_labels(bare, texts)
    finally:
        del bare
        gc.collect()


# --- the service -----------------------------------------------------------------------


@dataclass
class LoadSlice:
    texts_per_s: float
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0


class HttpConnection:
    """One keep-alive HTTP/1.1 connection that POSTs JSON and reads the answer.

    Written here rather than using httpx because the load generator shares the two
    cores with the server it measures: httpx's AsyncClient costs about 1 ms of CPU per
    request (its share was recorded in earlier runs), this about 0.2 ms, so the figures
    are the server's. It speaks only what the service answers /predict with: a status
    line, headers and a Content-Length body.
    """

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post_json(self, path: str, payload: object) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        body = json.dumps(payload).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        try:
            self.writer.write(head.encode() + body)
            status_line, *headers = (await self.reader.readuntil(b"\r\n\r\n")).split(b"\r\n")
            lengths = [h for h in headers if h.lower().startswith(b"content-length:")]
            if not lengths:
                raise ConnectionError("answer without Content-Length")
            answer = await self.reader.readexactly(int(lengths[0].split(b":", 1)[1]))
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            self.close()  # the next request opens a fresh connection
            raise ConnectionError(f"connection to {self.host}:{self.port} failed") from None
        return int(status_line.split()[1]), answer

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def load_slice(base_url: str, pool: TextPool, concurrency: int, seconds: float) -> LoadSlice:
    """Closed loop: `concurrency` clients, one text per request, for `seconds`.

    Only answers that arrive inside the window count towards throughput, so the
    drain of the last in-flight requests neither helps nor hurts it. An answer
    counts only if it is a 200 whose JSON holds one prediction.
    """
    url = httpx.URL(base_url)
    deadline = time.perf_counter() + seconds
    result, counted = LoadSlice(0.0), [0]

    async def client_loop() -> None:
        connection = HttpConnection(url.host, url.port)
        try:
            while time.perf_counter() < deadline:
                sent = time.perf_counter()
                try:
                    status, body = await connection.post_json("/predict", {"texts": pool.take(1)})
                except ConnectionError:
                    result.errors += 1
                    continue
                done = time.perf_counter()
                if status != 200 or len(json.loads(body)) != 1:
                    result.errors += 1
                    continue
                result.latencies_ms.append((done - sent) * 1000)
                counted[0] += done <= deadline
        finally:
            connection.close()

    await asyncio.gather(*(client_loop() for _ in range(concurrency)))
    result.texts_per_s = counted[0] / seconds
    return result


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile; None when nothing succeeded."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def summarize_level(concurrency: int, slices: list[LoadSlice]) -> dict:
    latencies = [ms for s in slices for ms in s.latencies_ms]
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    return {
        "concurrency": concurrency,
        "texts_per_s": round(statistics.median(s.texts_per_s for s in slices), 1),
        "p50_ms": round(p50, 1) if p50 is not None else None,
        "p99_ms": round(p99, 1) if p99 is not None else None,
        "requests": len(latencies),
        "errors": sum(s.errors for s in slices),
    }


async def measure_http(
    base_url: str, data: Dataset, levels: list[int], profile: Profile, server: subprocess.Popen
) -> dict:
    """Each level in turn, lightest first, then the lightest again.

    Levels are not interleaved: BentoML's batcher learns how long to hold requests
    from the waits it has seen, so a level carries over into the next. The final
    re-run of the lightest level shows how much of that lingers after a load.
    """
    pool = TextPool(data.texts, start=len(data.texts) // 2)
    # The batcher calibrates itself on its first requests; keep that out of the figures.
    await load_slice(base_url, pool, levels[0], 2.0)
    by_level = [await measure_level(base_url, pool, c, profile, server) for c in levels]
    again = await measure_level(base_url, pool, levels[0], profile, server, rounds=1)
    for level in [*by_level, again]:
        say(
            f"  http concurrency {level['concurrency']:>3}: {level['texts_per_s']:8.1f} texts/s, "
            f"p50 {level['p50_ms']} ms, p99 {level['p99_ms']} ms, errors {level['errors']}, "
            f"others' CPU {level.get('others_cpu_share', 0):.0%}"
        )
    best = max(by_level, key=lambda level: level["texts_per_s"])
    return {"by_concurrency": by_level, "best": best, "first_level_after_load": again}


async def measure_level(
    base_url: str,
    pool: TextPool,
    concurrency: int,
    profile: Profile,
    server: subprocess.Popen,
    rounds: int = 0,
) -> dict:
    await load_slice(base_url, pool, concurrency, 1.0)  # settle: the batcher adapts to the level
    with CpuMeter(server) as cpu:
        slices = [
            await load_slice(base_url, pool, concurrency, profile.http_slice_s)
            for _ in range(rounds or profile.http_rounds)
        ]
    return {**summarize_level(concurrency, slices), **cpu.figures}


def service_labels(base_url: str, texts: list[str]) -> list[str]:
    """Top-1 labels from POST /predict, SERVICE_BATCH texts per request."""
    labels: list[str] = []
    with httpx.Client(base_url=base_url, timeout=120, trust_env=False) as client:
        for start in range(0, len(texts), SERVICE_BATCH):
            response = client.post("/predict", json={"texts": texts[start : start + SERVICE_BATCH]})
            response.raise_for_status()
            labels.extend(item["label"] for item in response.json())
    return labels


def measure_service(
    data: Dataset, data_dir: Path, levels: list[int], profile: Profile, workers: int
) -> dict:
    """Phase 2 against a real `bentoml serve` with `workers` API workers, torn down after.

    Phase 5 (accuracy through /predict) runs on the first server only: the workers
    serve the same model.
    """
    say(f"service (bentoml serve, {workers} worker{'s' * (workers > 1)})")
    env = {
        "LIVETUNE_LABELS_FILE": str(data_dir / "categories.json"),
        "LIVETUNE_WORKERS": str(workers),
    }
    with tempfile.TemporaryDirectory(prefix="livetune-bench-") as tmp:
        started = time.perf_counter()
        try:
            with running_server(Path(tmp), **env) as server:
                ready_s = time.perf_counter() - started
                say(f"  every worker ready after {ready_s:.1f}s at {server.base}")
                http = asyncio.run(measure_http(server.base, data, levels, profile, server.process))
                texts, _ = accuracy_set(data, profile)
                labels = service_labels(server.base, texts)
        except BaseException:
            logs = sorted(Path(tmp).glob("*.log"))
            say(f"server log tail:\n{log_tail(logs[-1]) if logs else '(no log)'}")
            raise
    settings = f"LIVETUNE_* defaults but WORKERS={workers}, LABELS_FILE=<data>/categories.json"
    return {
        "workers": workers,
        "torch_threads_per_worker": worker_threads(workers),
        "ready_s": round(ready_s, 1),
        "settings": settings,
        **http,
        "labels": labels,
    }


# --- report ----------------------------------------------------------------------------


def accuracy_figures(data: Dataset, profile: Profile, in_process: dict, service: dict) -> dict:
    _, gold = accuracy_set(data, profile)
    return {
        "texts": len(gold),
        "full_test_set": len(gold) == len(data.texts),
        "service": round(agreement(service["labels"], gold), 4),
        "in_process_template": round(agreement(in_process["template_labels"], gold), 4),
        "bare_names": round(agreement(in_process["bare_labels"], gold), 4),
        "service_vs_in_process_agreement": round(
            agreement(service["labels"], in_process["template_labels"]), 4
        ),
        "template": DEFAULT_TEMPLATE,
        "target_service": TARGET_ACCURACY,
    }


def ratio_figures(raw: dict, as_served: dict, naive: dict, service: dict) -> dict:
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


def meta(args: argparse.Namespace, data: Dataset) -> dict:
    return {
        "script": "benchmarks/bench_predict.py",
        "quick": args.quick,
        "data": str(args.data),
        "dataset": "Banking77, Casanueva et al. 2020, CC-BY-4.0",
        "labels": len(data.labels),
        "test_texts": len(data.texts),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": TORCH_THREADS,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def met(ok: bool) -> str:
    return "met" if ok else "MISSED"


def rate(value: float) -> str:
    return f"{value:,.0f} texts/s"


def markdown(results: dict) -> str:
    header = [("Figure", "Value", "Baseline", "Ratio", "Target"), ("---",) * 5]
    tables = []
    for run in results["service_runs"]:
        levels = [*run["by_concurrency"], {**run["first_level_after_load"], "after": True}]
        tables += ["", f"{workers_name(run['workers'])}:", "", *level_table(levels)]
    return "\n".join(
        [
            *map(table_row, header + throughput_rows(results) + quality_rows(results)),
            *tables,
            "",
            noise_note(results),
        ]
    )


def workers_name(workers: int) -> str:
    threads = worker_threads(workers)
    return f"{workers} worker{'s' * (workers > 1)} x {threads} torch thread{'s' * (threads > 1)}"


def throughput_rows(results: dict) -> list[tuple]:
    raw, naive, prec, ratios = (results[k] for k in ("raw", "naive", "precision", "ratios"))
    served, best = results["as_served"], results["service"]
    return [
        (
            f"Raw `Predictor.predict`, best batch ({raw['best_batch_size']})",
            rate(raw["best_texts_per_s"]),
            f"naive, 1 text/forward: {rate(naive['texts_per_s'])}",
            f"{ratios['raw_best_vs_naive']:.2f}x",
            "",
        ),
        (
            f"{prec['auto_dtype']} autocast at batch {prec['batch_size']}",
            rate(prec["auto_texts_per_s"]),
            f"fp32: {rate(prec['fp32_texts_per_s'])}",
            f"{prec['auto_vs_fp32']:.2f}x",
            f"top-1 agreement {prec['top1_agreement']:.1%} ({prec['agreement_texts']} texts)",
        ),
        (
            f"In-process as served: best batch ({served['best_batch_size']}) sorted, "
            f"in {served['forward_rows']}-row forwards",
            rate(served["best_texts_per_s"]),
            f"raw best: {rate(raw['best_texts_per_s'])}",
            f"{ratios['as_served_vs_raw']:.2f}x",
            "",
        ),
        *(
            (
                f"Service, 1 text/request, {workers_name(run['workers'])}, "
                f"best concurrency ({run['best']['concurrency']})",
                rate(run["best"]["texts_per_s"]),
                f"raw best: {rate(raw['best_texts_per_s'])}",
                f"{run['best']['texts_per_s'] / raw['best_texts_per_s']:.2f}x",
                "",
            )
            for run in results["service_runs"]
        ),
        (
            f"Service, best of the above ({workers_name(best['workers'])})",
            rate(best["best"]["texts_per_s"]),
            f"raw best: {rate(raw['best_texts_per_s'])}",
            f"{ratios['service_vs_raw']:.2f}x",
            f">= {TARGET_SERVICE_VS_RAW:g} {met(ratios['service_vs_raw_met'])}",
        ),
        (
            "Service vs no batching",
            rate(best["best"]["texts_per_s"]),
            f"naive: {rate(naive['texts_per_s'])}",
            f"{ratios['service_vs_naive']:.2f}x",
            f">= {TARGET_SERVICE_VS_NAIVE:g} {met(ratios['service_vs_naive_met'])}",
        ),
        (
            "Service vs in-process as served (what HTTP costs)",
            rate(best["best"]["texts_per_s"]),
            f"as served: {rate(served['best_texts_per_s'])}",
            f"{ratios['service_vs_as_served']:.2f}x",
            "",
        ),
    ]


def quality_rows(results: dict) -> list[tuple]:
    acc, service = results["accuracy"], results["service"]
    best = service["best"]
    return [
        (
            f"Service latency at concurrency {best['concurrency']}, "
            f"{workers_name(service['workers'])}",
            f"p50 {best['p50_ms']} ms, p99 {best['p99_ms']} ms",
            "",
            "",
            "",
        ),
        (
            f"Zero-shot accuracy via /predict ({acc['texts']} test texts)",
            f"{acc['service']:.1%}",
            f"bare label names: {acc['bare_names']:.1%}",
            f"{100 * (acc['service'] - acc['bare_names']):+.1f} pts",
            f">= {TARGET_ACCURACY:.0%} {met(acc['service'] >= TARGET_ACCURACY)}",
        ),
    ]


def level_table(levels: list[dict]) -> list[str]:
    rows = [
        ("Concurrency", "texts/s", "p50 ms", "p99 ms", "errors", "client CPU", "others' CPU"),
        ("---",) * 7,
    ]
    for level in levels:
        name = f"{level['concurrency']} (again, after the load)" if level.get("after") else ""
        rows.append(
            (
                name or level["concurrency"],
                f"{level['texts_per_s']:,.0f}",
                level["p50_ms"],
                level["p99_ms"],
                level["errors"],
                share(level.get("client_cpu_share")),
                share(level.get("others_cpu_share")),
            )
        )
    return [table_row(row) for row in rows]


def noise_note(results: dict) -> str:
    return (
        f"Other processes took {share(results['raw'].get('others_cpu_share'))} of the CPU "
        f"during the batch-size sweep and {share(results['precision'].get('others_cpu_share'))} "
        f"during bf16 vs fp32 (100% = all {os.cpu_count()} cores). Over HTTP the load "
        "generator (client CPU) shares those cores with the server."
    )


def share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def table_row(cells: tuple) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def write_json(path: Path, results: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")  # a crash never leaves half a file
    tmp.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


# --- entry point -----------------------------------------------------------------------


def int_list(value: str) -> list[int]:
    try:
        numbers = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {value!r}"
        ) from None
    if not numbers or min(numbers) < 1:
        raise argparse.ArgumentTypeError("expected positive integers")
    return numbers


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="Banking77 folder (read in place)"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    parser.add_argument(
        "--quick", action="store_true", help="short slices, 300 test texts: a ~2-3 minute smoke run"
    )
    parser.add_argument(
        "--workers",
        type=int_list,
        default=sorted({1, os.cpu_count() or 1}),
        help="API worker counts to measure the service with, e.g. 1,2 (default: 1 and the cores)",
    )
    parser.add_argument(
        "--concurrency", type=int_list, default=[1, 8, 32, 64, 128], help="e.g. 1,8,32,64"
    )
    parser.add_argument(
        "--batch-sizes", type=int_list, default=[1, 8, 32, 64, 128], help="raw sweep"
    )
    args = parser.parse_args(argv)
    args.batch_sizes = sorted(set(args.batch_sizes) | {1})  # batch size 1 is the naive baseline
    args.concurrency = sorted(set(args.concurrency))  # a ramp: see measure_http
    args.data = args.data.resolve()
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    profile = QUICK if args.quick else FULL
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the load report would drown the figures
    hf_logging.disable_progress_bar()
    data = load_dataset(args.data)
    in_process = measure_in_process(data, args.batch_sizes, profile)
    runs = [measure_service(data, args.data, args.concurrency, profile, w) for w in args.workers]
    service = max(runs, key=lambda run: run["best"]["texts_per_s"])
    results = {
        "meta": meta(args, data),
        "raw": in_process["raw"],
        "as_served": in_process["as_served"],
        "naive": in_process["naive"],
        "precision": in_process["precision"],
        "service": {key: value for key, value in service.items() if key != "labels"},
    }
    results["ratios"] = ratio_figures(
        results["raw"], results["as_served"], results["naive"], service
    )
    results["accuracy"] = accuracy_figures(data, profile, in_process, runs[0])
    for run in runs:
        del run["labels"]
    results["service_runs"] = runs
    write_json(args.out, results)
    say(f"\nresults: {args.out}\n")
    say(markdown(results))


if __name__ == "__main__":
    main()
