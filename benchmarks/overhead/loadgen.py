"""A small HTTP/1.1 load generator: open loop at a fixed rate, or closed loop.

Why not httpx or aiohttp: on a 2-core machine the generator competes with the servers it
measures, so it must be cheap. Each request is a pre-built byte string written to a
keep-alive connection; answers are parsed by ``httptools`` (the C parser uvicorn uses)
on a uvloop event loop. About 15 µs of CPU per request.

Open loop (``rate > 0``): request *i* is due at ``t0 + i / rate``; its latency is measured
from that scheduled time, not from when it was actually written, so a server that
stalls is charged for every request that should have been sent meanwhile (no
coordinated omission). ``service`` latencies (from the actual write) are kept too: the
difference is the generator's own lag (timer granularity about 1 ms, waiting for a
free connection).

Several generator processes (:class:`GeneratorPool`) share the rate; each runs its own
event loop and reports its CPU time, so the load generator's cost is visible.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import os
import random
import resource
import time
from array import array
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import httptools
import uvloop


@dataclass(frozen=True)
class Template:
    """One kind of request: where to send it and what a good answer contains."""

    host: str
    port: int
    path: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    expect: bytes = b'"choices"'  # a 200 answer must contain this
    stream: bool = False

    def raw(self) -> bytes:
        lines = [
            f"POST {self.path} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            "Content-Type: application/json",
            f"Content-Length: {len(self.body)}",
            *(f"{k}: {v}" for k, v in self.headers),
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body


@dataclass(frozen=True)
class Job:
    templates: tuple[Template, ...]
    weights: tuple[float, ...]  # share of each template
    duration: float
    rate: float = 0.0  # requests/s for this process; 0 = closed loop
    concurrency: int = 0  # closed loop: connections each sending back to back
    t0: float = 0.0  # perf_counter() at which the schedule starts (shared by processes)
    phase: float = 0.0  # this process's offset inside one interval, in [0, 1)
    max_connections: int = 2000
    timeout: float = 15.0


@dataclass
class Result:
    latency: array = field(default_factory=lambda: array("d"))  # from scheduled time (s)
    service: array = field(default_factory=lambda: array("d"))  # from actual write (s)
    ttfb: array = field(default_factory=lambda: array("d"))  # first body byte, from scheduled
    sent: int = 0
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    cpu: float = 0.0  # CPU seconds of this generator process during the job
    elapsed: float = 0.0  # first scheduled send to last answer

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def merge(self, other: Result) -> None:
        self.latency.extend(other.latency)
        self.service.extend(other.service)
        self.ttfb.extend(other.ttfb)
        self.sent += other.sent
        self.ok += other.ok
        for k, v in other.errors.items():
            self.errors[k] = self.errors.get(k, 0) + v
        self.cpu += other.cpu
        self.elapsed = max(self.elapsed, other.elapsed)


class _Conn(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[tuple[int, bytes, float]] | None = None
        self.body: list[bytes] = []
        self.first_body = 0.0
        self.alive = True

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._fail(ConnectionError("bad response"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.alive = False
        self._fail(exc or ConnectionError("closed"))

    # httptools callbacks
    def on_body(self, body: bytes) -> None:
        if not self.first_body:
            self.first_body = time.perf_counter()
        self.body.append(body)

    def on_message_complete(self) -> None:
        if not self.parser.should_keep_alive():
            self.alive = False
        w, self.waiter = self.waiter, None
        if w is not None and not w.done():
            w.set_result((self.parser.get_status_code(), b"".join(self.body), self.first_body))

    def _fail(self, exc: BaseException) -> None:
        w, self.waiter = self.waiter, None
        if w is not None and not w.done():
            w.set_exception(exc)

    def send(self, raw: bytes) -> asyncio.Future[tuple[int, bytes, float]]:
        assert self.transport is not None
        self.body = []
        self.first_body = 0.0
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return self.waiter

    def close(self) -> None:
        self.alive = False
        if self.transport is not None:
            self.transport.close()


class _Client:
    """Idle keep-alive connections per (host, port), opened on demand up to a limit."""

    def __init__(self, limit: int) -> None:
        self.idle: dict[tuple[str, int], list[_Conn]] = {}
        self.sem = asyncio.Semaphore(limit)
        self.all: set[_Conn] = set()

    async def request(
        self, tpl: Template, raw: bytes, due: float, wait_s: float, res: Result
    ) -> None:
        async with self.sem:
            key = (tpl.host, tpl.port)
            pool = self.idle.setdefault(key, [])
            conn = None
            while pool and conn is None:
                conn = pool.pop()
                if not conn.alive:  # the server closed it while it was idle
                    self.all.discard(conn)
                    conn = None
            try:
                if conn is None:
                    loop = asyncio.get_running_loop()
                    transport, conn = await asyncio.wait_for(
                        loop.create_connection(_Conn, tpl.host, tpl.port), wait_s
                    )
                    # uvloop may resolve create_connection before connection_made has run
                    conn.transport = transport
                    self.all.add(conn)
                sent_at = time.perf_counter()
                status, body, first = await asyncio.wait_for(conn.send(raw), wait_s)
            except TimeoutError:
                res.error("timeout")
                if conn is not None:
                    conn.close()
                return
            except (OSError, ConnectionError, RuntimeError):  # RuntimeError: closed transport
                res.error("connection")
                if conn is not None:
                    conn.close()
                return
            done = time.perf_counter()
            if conn.alive:
                pool.append(conn)
            else:
                conn.close()
                self.all.discard(conn)
        if status != 200:
            res.error(f"http_{status}")
        elif tpl.expect not in body:
            res.error("bad_body")
        else:
            res.ok += 1
            res.latency.append(done - due)
            res.service.append(done - sent_at)
            res.ttfb.append((first or done) - due)

    def close(self) -> None:
        for c in self.all:
            c.close()
        self.all.clear()
        self.idle.clear()


def _choose(job: Job, rng: random.Random) -> int:
    if len(job.templates) == 1:
        return 0
    return rng.choices(range(len(job.templates)), weights=job.weights)[0]


async def _open_loop(job: Job, client: _Client, raws: list[bytes], res: Result) -> None:
    rng = random.Random(os.getpid())
    interval = 1.0 / job.rate
    n = int(job.rate * job.duration)
    tasks: set[asyncio.Task[None]] = set()
    for i in range(n):
        due = job.t0 + (i + job.phase) * interval
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        k = _choose(job, rng)
        res.sent += 1
        t = asyncio.create_task(client.request(job.templates[k], raws[k], due, job.timeout, res))
        tasks.add(t)
        t.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=job.timeout + 1)
    for t in tasks:
        t.cancel()
        res.error("unfinished")


async def _closed_loop(job: Job, client: _Client, raws: list[bytes], res: Result) -> None:
    rng = random.Random(os.getpid())
    end = job.t0 + job.duration

    async def worker() -> None:
        while time.perf_counter() < end:
            k = _choose(job, rng)
            res.sent += 1
            await client.request(job.templates[k], raws[k], time.perf_counter(), job.timeout, res)

    delay = job.t0 - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)
    await asyncio.gather(*(worker() for _ in range(job.concurrency)))


def run_job(job: Job) -> Result:
    """Run one job on a fresh uvloop event loop in this process."""
    res = Result()

    async def main() -> None:
        client = _Client(job.max_connections)
        raws = [t.raw() for t in job.templates]
        try:
            if job.rate > 0:
                await _open_loop(job, client, raws, res)
            elif job.concurrency > 0:
                await _closed_loop(job, client, raws, res)
        finally:
            client.close()

    before = _cpu()
    uvloop.run(main())
    res.cpu = _cpu() - before
    res.elapsed = time.perf_counter() - job.t0
    return res


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _serve(conn: Connection) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    while True:
        job = conn.recv()
        if job is None:
            return
        conn.send(run_job(job))


class GeneratorPool:
    """``n`` generator processes; a job's rate and concurrency are split between them."""

    def __init__(self, n: int) -> None:
        ctx = mp.get_context("spawn")
        self._pipes: list[Connection] = []
        self._procs: list[Any] = []
        for _ in range(n):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_serve, args=(child,), daemon=True)
            p.start()
            self._pipes.append(parent)
            self._procs.append(p)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs]

    def run(self, job: Job, start_in: float = 0.3) -> Result:
        n = len(self._pipes)
        t0 = time.perf_counter() + start_in
        for i, pipe in enumerate(self._pipes):
            part = Job(
                templates=job.templates,
                weights=job.weights,
                duration=job.duration,
                rate=job.rate / n,
                # closed loop: the clients spread over the processes (some may get none)
                concurrency=job.concurrency // n + (1 if i < job.concurrency % n else 0),
                t0=t0,
                phase=i / n,
                max_connections=max(1, job.max_connections // n),
                timeout=job.timeout,
            )
            pipe.send(part)
        total = Result()
        for pipe in self._pipes:
            total.merge(pipe.recv())
        return total

    def close(self) -> None:
        for pipe in self._pipes:
            with contextlib.suppress(OSError):
                pipe.send(None)
        for p in self._procs:
            p.join(5)
            if p.is_alive():
                p.kill()
