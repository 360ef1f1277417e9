"""The one load generator: closed-loop keep-alive HTTP/1.1 clients on one asyncio loop."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

from benchmarks.harness.data import TextPool
from benchmarks.harness.report import say


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
        """POST `payload` as JSON; the status and the body of the answer."""
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
        """Drop the connection; the next POST opens a new one."""
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


@dataclass(frozen=True, slots=True)
class Answer:
    index: int  # position of the request's body among the bodies given to `drive`
    status: int  # 0: the connection failed, no answer
    body: bytes
    sent: float  # time.perf_counter()
    done: float

    @property
    def latency_ms(self) -> float:
        """Send to last byte of the answer."""
        return (self.done - self.sent) * 1000


def is_ok(answer: Answer) -> bool:
    """A 200: the default test of an answer."""
    return answer.status == 200


Accept = Callable[[Answer], bool]


@dataclass
class Load:
    """Every answer `drive` got, and the window it ran: its deadline, or the last answer."""

    answers: list[Answer]
    started: float
    ended: float

    @property
    def seconds(self) -> float:
        """Length of the window."""
        return self.ended - self.started

    def accepted(self, accept: Accept = is_ok) -> list[Answer]:
        """The answers that pass `accept`."""
        return [answer for answer in self.answers if accept(answer)]

    def errors(self, accept: Accept = is_ok) -> int:
        """Failed connections and answers `accept` refuses."""
        return len(self.answers) - len(self.accepted(accept))

    def latencies_ms(self, accept: Accept = is_ok) -> list[float]:
        """Latency of each accepted answer."""
        return [answer.latency_ms for answer in self.accepted(accept)]

    def rate(self, accept: Accept = is_ok) -> float:
        """Accepted answers per second of the window.

        Only answers that arrive inside the window count, so the drain of the last
        in-flight requests after a deadline neither helps nor hurts it.
        """
        inside = sum(answer.done <= self.ended for answer in self.accepted(accept))
        return inside / self.seconds


async def drive(
    base_url: str, path: str, bodies: Iterable[object], clients: int, seconds: float | None = None
) -> Load:
    """`clients` closed-loop connections POST `bodies` to `path` till they run out or time is up."""
    url = urlsplit(base_url)
    work = enumerate(bodies)  # shared: each body goes out once, to whichever client is free
    answers: list[Answer] = []
    started = time.perf_counter()
    deadline = None if seconds is None else started + seconds
    connections = [HttpConnection(url.hostname, url.port) for _ in range(clients)]
    await asyncio.gather(*(_client(c, path, work, deadline, answers) for c in connections))
    ended = time.perf_counter()  # past the deadline by the drain, or short of it: out of bodies
    return Load(answers, started, ended if deadline is None else min(ended, deadline))


async def _client(
    connection: HttpConnection,
    path: str,
    work: Iterator[tuple[int, object]],
    deadline: float | None,
    answers: list[Answer],
) -> None:
    try:
        while deadline is None or time.perf_counter() < deadline:
            item = next(work, None)
            if item is None:
                return
            sent = time.perf_counter()
            try:
                status, body = await connection.post_json(path, item[1])
            except ConnectionError:
                status, body = 0, b""
            answers.append(Answer(item[0], status, body, sent, time.perf_counter()))
    finally:
        connection.close()


def one_text_each(pool: TextPool) -> Iterator[dict]:
    """/predict bodies of one text each, drawn from `pool`, without end."""
    while True:
        yield {"texts": pool.take(1)}


RETRIES = 5  # a 503 says "overloaded, come back": a client backs off and sends it again


def post_all(base_url: str, path: str, payloads: list[object], clients: int = 1) -> list:
    """POST every payload, `clients` at a time; the JSON answers in payload order.

    A payload answered 503 is sent again after a pause, up to RETRIES times, as a polite
    client does (BentoML's batcher answers 503 when a request outwaits its queue on an
    overloaded host); any other status, or a 503 still there after that, is an error.
    """
    answers: dict[int, Answer] = {}
    pending = list(range(len(payloads)))
    for attempt in range(RETRIES + 1):
        load = asyncio.run(drive(base_url, path, [payloads[i] for i in pending], clients))
        for answer in load.answers:
            answers[pending[answer.index]] = answer
        pending = [i for i in pending if answers[i].status == 503]
        if not pending or attempt == RETRIES:
            break
        say(f"POST {path}: {len(pending)} answered 503 (overloaded); again in {2**attempt} s")
        time.sleep(2**attempt)
    for _, answer in sorted(answers.items()):
        if answer.status != 200:
            raise RuntimeError(f"POST {path} answered {answer.status}: {answer.body[:300]!r}")
    return [json.loads(answer.body) for _, answer in sorted(answers.items())]


def add_load_arguments(parser, seconds: float, rounds: int) -> None:
    """The options of a peak-load benchmark: the server's workers, the one-text clients,
    and how long and how often each configuration is driven."""
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--clients", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=seconds)
    parser.add_argument("--rounds", type=int, default=rounds)
