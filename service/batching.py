"""Batching with a bounded, predictable wait: one per API worker, in front of the model.

Why not BentoML's adaptive batching: its dispatcher learns how long to hold requests
from the latencies it has seen, and keeps that learned wait after a burst; a request
that arrives alone after a busy hour then waits for company that never comes
(`benchmarks/bench_predict.py` measured a lone request at 15x its latency before the
burst). Its maintainers have frozen that code (bentoml/BentoML#3664). This is the rule
of Triton's dynamic batcher instead, with nothing learned:

- a request that finds the model idle and nobody queued is dispatched at once;
- otherwise requests queue while a batch runs, and when the model is free the queue
  leaves as one batch when it holds `max_rows` texts, or when its oldest request has
  waited `max_delay_s`, whichever comes first (so a request waits at most the batch in
  progress plus `max_delay_s`);
- a batch is never split: one batch is one call of the model, so it is served by one
  adapter version and one label-set version (`ServingModel.predict`).

The model runs in one thread of its own, so the event loop keeps taking requests, and
the queue is bounded (`max_queued_rows`): past it a request is refused at once (503)
rather than queued for longer than any client waits.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from service import metrics


class Overloaded(RuntimeError):
    """The queue is full: the worker cannot take more texts now; retry later."""


@dataclass
class Request:
    texts: Sequence[str]
    future: asyncio.Future
    idle: bool  # it found the model idle and nobody queued: nobody to wait for
    queued_at: float = field(default_factory=time.perf_counter)


class Batcher:
    """Collects concurrent requests into batches for `run(texts) -> (answers, *extra)`,
    which is called in one thread; each request gets its own slice of the answers and
    the extras of the batch that served it."""

    def __init__(
        self,
        run: Callable[[list[str]], tuple],
        max_rows: int,
        max_delay_s: float,
        max_queued_rows: int,
    ):
        self.run = run
        self.max_rows = max_rows
        self.max_delay_s = max_delay_s
        self.max_queued_rows = max_queued_rows
        self.queue: deque[Request] = deque()
        self.queued_rows = 0
        self.busy = False  # a batch is running
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="livetune-model")
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None

    async def submit(self, texts: Sequence[str]) -> tuple:
        """(answers for `texts`, *extras of their batch); Overloaded if the queue is full."""
        if self.queued_rows + len(texts) > self.max_queued_rows and self.queue:
            raise Overloaded(
                f"{self.queued_rows} texts are queued on this worker already"
                f" (LIVETUNE_MAX_QUEUED_TEXTS={self.max_queued_rows})"
            )
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done():  # the first call, on the worker's loop
            self._wake = asyncio.Event()
            self._task = loop.create_task(self._dispatch())
        request = Request(texts, loop.create_future(), idle=not self.busy and not self.queue)
        self.queue.append(request)
        self.queued_rows += len(texts)
        metrics.record_in_flight(+1)
        self._wake.set()
        try:
            return await request.future
        finally:
            metrics.record_in_flight(-1)

    async def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self.queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._fill()
            batch = self._take()
            now = time.perf_counter()
            for request in batch:
                metrics.record_queue_delay(now - request.queued_at)
            texts = [text for request in batch for text in request.texts]
            metrics.record_batch(len(texts))
            self.busy = True
            try:
                answers, *extras = await loop.run_in_executor(self._executor, self.run, texts)
            except Exception as exc:  # every request of the batch gets the error
                for request in batch:
                    if not request.future.done():
                        request.future.set_exception(exc)
                continue
            finally:
                self.busy = False
            start = 0
            for request in batch:
                end = start + len(request.texts)
                if not request.future.done():  # its client may have gone
                    request.future.set_result((answers[start:end], *extras))
                start = end

    async def _fill(self) -> None:
        """Wait for company only while the oldest request has waited less than the delay
        and the batch is not full; a request that found the model idle waits not at all."""
        if self.queue[0].idle:
            return
        while self.queued_rows < self.max_rows:
            left = self.max_delay_s - (time.perf_counter() - self.queue[0].queued_at)
            if left <= 0:
                return
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), left)
            except TimeoutError:
                return

    def _take(self) -> list[Request]:
        """The oldest requests up to max_rows texts (at least one, whatever its size)."""
        batch, rows = [], 0
        while self.queue and (not batch or rows + len(self.queue[0].texts) <= self.max_rows):
            request = self.queue.popleft()
            batch.append(request)
            rows += len(request.texts)
        self.queued_rows -= rows
        return batch

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)
