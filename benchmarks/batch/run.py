"""Batch benchmark: does batch work fill spare capacity without hurting interactive latency?

Starts real processes on 127.0.0.1: synthetic engines (:mod:`benchmarks.batch.engine`, a
fixed number of slots and a time per token) and one access point (``verbund gateway``)
in front of them. Three phases:

A. interactive only: streamed chat requests arriving at random (Poisson) at a fixed rate;
B. a batch alone;
C. a batch while the same interactive load runs.

Reports batch throughput as a share of the engines' capacity (busy slot-seconds of batch
requests over slots x time) and, in C, as a share of the capacity interactive traffic
leaves free; and interactive time to first token (p50, p99) in A and C.
Targets: share of free capacity >= 80 %, p99 TTFT in C at most 20 % above A.

Run: ``PYTHONPATH=src:. python -m benchmarks.batch.run`` (about 4 minutes; ``--quick``
for a short smoke run). Prints a table and writes ``benchmarks/results/batch.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import random
import secrets
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvloop

from harness import federation as fed
from harness.gateway import GatewayProcess
from harness.ports import free_port
from harness.processes import ROOT, Process

RESULTS = ROOT / "benchmarks" / "results" / "batch.md"


@dataclass
class Params:
    engines: int = 2
    slots: int = 32
    prefill_ms: float = 50.0
    decode_ms: float = 48.0
    tokens: int = 40  # per request, interactive and batch
    tokens_per_event: int = 8
    interactive_rate: float = 8.0  # requests per second, Poisson
    interactive_seconds: float = 40.0
    batch_alone: int = 1500
    batch_mixed: int = 2000
    threshold: float = 0.875


@dataclass
class Phase:
    name: str
    window: float = 0.0
    batch_items: int = 0
    batch_busy: float = 0.0
    interactive_busy: float = 0.0
    capacity: float = 0.0
    interactive_done: int = 0
    interactive_queued: int = 0  # found every slot of the engine busy
    ttft: list[float] = field(default_factory=list)
    errors: int = 0
    start: float = 0.0
    noise: str = ""

    @property
    def batch_rate(self) -> float:
        return self.batch_items / self.window if self.window else 0.0

    @property
    def batch_share(self) -> float:
        return self.batch_busy / self.capacity if self.capacity else 0.0

    @property
    def free_share(self) -> float:
        free = self.capacity - self.interactive_busy
        return self.batch_busy / free if free > 0 else 0.0

    def pct(self, q: float) -> float:
        if not self.ttft:
            return float("nan")
        s = sorted(self.ttft)
        return s[min(len(s) - 1, int(q * len(s)))] * 1000


def config(state: Path, gw_port: int, ports: list[int], p: Params) -> dict[str, Any]:
    sites = [
        fed.site(
            f"site-{i}",
            "NW",
            [
                fed.backend(
                    f"engine-{i}", f"http://127.0.0.1:{port}", ["synth"], max_concurrency=p.slots
                )
            ],
            max_data_class="internal",
        )
        for i, port in enumerate(ports, 1)
    ]
    return fed.federation(
        "ap-bench",
        state,
        sites,
        port=gw_port,
        batch={"utilisation_threshold": p.threshold, "max_in_flight": 512},
        files={"max_upload_bytes": 104857600},
        models=["synth"],
        institutions=[fed.institution("bench", home_region="NW")],
    )


async def engine_stats(client: httpx.AsyncClient, ports: list[int]) -> dict[str, float]:
    out = {"stream": 0.0, "batch": 0.0, "slots": 0.0, "queued": 0.0, "t": time.monotonic()}
    for port in ports:
        s = (await client.get(f"http://127.0.0.1:{port}/stats")).json()
        out["queued"] += s["queued"]["stream"]
        out["stream"] += s["busy_slot_seconds"]["stream"]
        out["batch"] += s["busy_slot_seconds"]["batch"]
        out["slots"] += s["slots"]
    return out


def fill(phase: Phase, a: dict[str, float], b: dict[str, float]) -> None:
    phase.start = a["t"]
    phase.window = b["t"] - a["t"]
    phase.batch_busy = b["batch"] - a["batch"]
    phase.interactive_busy = b["stream"] - a["stream"]
    phase.capacity = a["slots"] * phase.window
    phase.interactive_queued = int(b["queued"] - a["queued"])


class Interactive:
    """Open-loop Poisson arrivals of streamed chat requests; records time to first token.

    A deliberately cheap client (raw asyncio streams, one connection per request, no HTTP
    library): on a small shared machine the load generator must not be what is measured.
    """

    def __init__(self, url: str, key: str, p: Params) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.host, self.port, self.p = host, int(port), p
        body = json.dumps(
            {
                "model": "synth",
                "messages": [{"role": "user", "content": "Wie spät ist es?"}],
                "max_tokens": p.tokens,
                "stream": True,
            }
        ).encode()
        self.request = (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode() + body
        self.samples: list[tuple[float, float]] = []  # (arrival time, ttft)
        self.errors = 0
        self.done = 0
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    async def one(self) -> None:
        t0 = time.monotonic()
        try:
            reader, writer = await asyncio.open_connection(self.host, self.port)
        except OSError:
            self.errors += 1
            return
        try:
            writer.write(self.request)
            head = b""
            last = b""
            first = True
            while data := await reader.read(65536):
                last = (last + data)[-64:]
                if first:
                    head += data
                    if b"data:" in head:
                        self.samples.append((t0, time.monotonic() - t0))
                        first = False
            if head.startswith(b"HTTP/1.1 200") and b"[DONE]" in last:
                self.done += 1
            else:
                self.errors += 1
        except OSError:
            self.errors += 1
        finally:
            writer.close()

    async def run(self) -> None:
        rng = random.Random(4)
        next_at = time.monotonic()
        while not self._stop.is_set():
            next_at += rng.expovariate(self.p.interactive_rate)
            delay = next_at - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
                if self._stop.is_set():
                    break
            t = asyncio.create_task(self.one())
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)
        if self._tasks:
            await asyncio.wait(list(self._tasks))

    def stop(self) -> None:
        self._stop.set()

    def between(self, t0: float, t1: float) -> list[float]:
        return [ttft for at, ttft in self.samples if t0 <= at <= t1]


async def run_batch(
    client: httpx.AsyncClient, url: str, key: str, n: int, p: Params, ports: list[int]
) -> tuple[dict[str, float], dict[str, float], int]:
    lines = []
    for i in range(n):
        body = {
            "model": "synth",
            "messages": [{"role": "user", "content": f"Fasse Dokument {i} zusammen."}],
            "max_tokens": p.tokens,
        }
        lines.append(
            json.dumps(
                {
                    "custom_id": f"doc-{i}",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": body,
                }
            )
        )
    auth = {"authorization": f"Bearer {key}"}
    up = await client.post(
        url + "/v1/files",
        files={"file": ("docs.jsonl", ("\n".join(lines) + "\n").encode())},
        data={"purpose": "batch"},
        headers=auth,
    )
    up.raise_for_status()
    before = await engine_stats(client, ports)
    r = await client.post(
        url + "/v1/batches",
        json={
            "input_file_id": up.json()["id"],
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
        },
        headers=auth,
    )
    r.raise_for_status()
    batch_id = r.json()["id"]
    deadline = time.monotonic() + 600
    while True:
        b = (await client.get(f"{url}/v1/batches/{batch_id}", headers=auth)).json()
        counts = b["request_counts"]
        if (
            b["status"] in ("finalizing", "completed")
            or counts["completed"] + counts["failed"] >= n
        ):
            after = await engine_stats(client, ports)
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"batch not done: {b['status']} {counts}")
        await asyncio.sleep(1.0)
    while b["status"] not in ("completed", "failed", "cancelled", "expired"):
        await asyncio.sleep(1.0)
        b = (await client.get(f"{url}/v1/batches/{batch_id}", headers=auth)).json()
    return before, after, int(b["request_counts"]["completed"])


def engine_argv(port: int, p: Params) -> list[str]:
    return [
        sys.executable, "-m", "benchmarks.batch.engine", "--port", str(port),
        "--slots", str(p.slots), "--prefill-ms", str(p.prefill_ms),
        "--decode-ms", str(p.decode_ms), "--tokens-per-event", str(p.tokens_per_event),
    ]  # fmt: skip


def bench(p: Params, state: Path) -> list[Phase]:
    """Start the engines and the access point, measure, stop them."""
    ports = [free_port() for _ in range(p.engines)]
    engines = [
        Process(
            f"engine-{i}",
            engine_argv(port, p),
            state / f"engine-{i}.log",
            cwd=ROOT,
        )
        for i, port in enumerate(ports, 1)
    ]
    profile = os.environ.get("BENCH_GW_PROFILE")
    gateway = GatewayProcess(
        config(state, free_port(), ports, p),
        state,
        admin_key="vbadmin-" + secrets.token_urlsafe(24),
        log_level=os.environ.get("BENCH_GW_LOG", "warning"),
        python=["-m", "cProfile", "-o", profile] if profile else [],
    )
    try:
        for engine in engines:
            engine.start()
        gateway.launch()
        for engine, port in zip(engines, ports, strict=True):
            engine.wait_http(f"http://127.0.0.1:{port}/v1/models")
        gateway.wait_ready(30, "/healthz")
        return uvloop.run(measure(p, gateway.url, gateway.admin_key, ports))
    finally:
        gateway.stop(15)
        for engine in engines:
            engine.stop(15)


class Noise:
    """How disturbed the machine was: event-loop stalls and the access point's responsiveness.

    On a small shared machine other jobs take CPU in bursts; every process then stalls at
    once. These numbers let a reader tell such bursts from the batch's own effect.
    """

    def __init__(self, client: httpx.AsyncClient, url: str) -> None:
        self.client, self.url = client, url
        self.stalls: list[tuple[float, float]] = []  # this process's event loop
        self.healthz: list[tuple[float, float]] = []  # GET /healthz latency of the access point

    async def watch(self) -> None:
        while True:
            t = time.monotonic()
            await asyncio.sleep(0.01)
            late = time.monotonic() - t - 0.01
            if late > 0.02:
                self.stalls.append((t, late))

    async def probe(self) -> None:
        while True:
            t = time.monotonic()
            with contextlib.suppress(httpx.HTTPError):
                await self.client.get(self.url + "/healthz")
                self.healthz.append((t, time.monotonic() - t))
            await asyncio.sleep(0.1)

    async def describe(self, ph: Phase, ports: list[int]) -> None:
        t0, t1 = ph.start, ph.start + ph.window
        engine = 0
        for port in ports:
            stalls = (await self.client.get(f"http://127.0.0.1:{port}/stats")).json()["stalls"]
            engine += sum(1 for w, _ in stalls if t0 <= w <= t1)
        client = sum(1 for w, _ in self.stalls if t0 <= w <= t1)
        hz = sorted(d for w, d in self.healthz if t0 <= w <= t1)
        p99 = hz[min(len(hz) - 1, int(0.99 * len(hz)))] * 1000 if hz else float("nan")
        ph.noise = (
            f"event-loop stalls > 20 ms: engines {engine}, load generator {client}; "
            f"access point GET /healthz p99 {p99:.1f} ms"
        )


async def measure(p: Params, url: str, admin: str, ports: list[int]) -> list[Phase]:
    limits = httpx.Limits(max_connections=2000, max_keepalive_connections=500)
    async with httpx.AsyncClient(timeout=120, limits=limits, trust_env=False) as client:
        noise = Noise(client, url)
        watchers = [asyncio.create_task(noise.watch()), asyncio.create_task(noise.probe())]
        r = await client.post(
            url + "/admin/keys",
            json={"institution": "bench", "name": "bench"},
            headers={"authorization": f"Bearer {admin}"},
        )
        r.raise_for_status()
        key = r.json()["key"]
        phases = []

        print(f"A: interactive only, {p.interactive_seconds:.0f} s ...", flush=True)
        a = Phase("A interactive alone")
        load = Interactive(url, key, p)
        task = asyncio.create_task(load.run())
        await asyncio.sleep(3)  # warm-up
        s0 = await engine_stats(client, ports)
        await asyncio.sleep(p.interactive_seconds)
        s1 = await engine_stats(client, ports)
        load.stop()
        await task
        fill(a, s0, s1)
        a.ttft = load.between(s0["t"], s1["t"])
        a.interactive_done, a.errors = load.done, load.errors
        phases.append(a)

        print(f"B: batch of {p.batch_alone} alone ...", flush=True)
        b = Phase("B batch alone")
        s0, s1, b.batch_items = await run_batch(client, url, key, p.batch_alone, p, ports)
        fill(b, s0, s1)
        phases.append(b)

        print(f"C: batch of {p.batch_mixed} with interactive load ...", flush=True)
        c = Phase("C batch + interactive")
        load = Interactive(url, key, p)
        task = asyncio.create_task(load.run())
        await asyncio.sleep(3)
        s0, s1, c.batch_items = await run_batch(client, url, key, p.batch_mixed, p, ports)
        load.stop()
        await task
        fill(c, s0, s1)
        c.ttft = load.between(s0["t"], s1["t"])
        c.interactive_done, c.errors = load.done, load.errors
        phases.append(c)
        for ph in phases:
            await noise.describe(ph, ports)
        for w in watchers:
            w.cancel()
        return phases


def table(phases: list[Phase]) -> str:
    head = (
        "| phase | window s | batch items/s | batch share of capacity | batch share of free "
        "capacity | interactive TTFT p50 ms | p99 ms | interactive samples | interactive "
        "requests that found no free slot | errors |"
    )
    rows = [head, "|" + "---|" * 10]
    for ph in phases:
        has_i = bool(ph.ttft)
        has_b = ph.batch_items > 0
        rows.append(
            f"| {ph.name} | {ph.window:.1f} | "
            + (f"{ph.batch_rate:.1f} | {ph.batch_share:.1%} | " if has_b else "- | - | ")
            + (f"{ph.free_share:.1%} | " if has_b and has_i else "- | ")
            + (
                f"{ph.pct(0.5):.1f} | {ph.pct(0.99):.1f} | {len(ph.ttft)} | "
                f"{ph.interactive_queued} | "
                if has_i
                else "- | - | - | - | "
            )
            + f"{ph.errors} |"
        )
    return "\n".join(rows)


def verdict(phases: list[Phase]) -> list[str]:
    a, _, c = phases
    rise = c.pct(0.99) / a.pct(0.99) - 1
    queued = c.interactive_queued / max(1, c.interactive_done)
    return [
        *(f"- {ph.name}: {ph.noise}" for ph in phases),
        f"- interactive requests in C that found every slot of their engine busy: "
        f"{c.interactive_queued} ({queued:.2%})",
        f"- batch share of the capacity interactive traffic leaves free (C): {c.free_share:.1%} "
        f"(target >= 80 %): {'met' if c.free_share >= 0.8 else 'NOT met'}",
        f"- interactive p99 TTFT rise with the batch (C vs A): {rise:+.1%} "
        f"(target <= +20 %): {'met' if rise <= 0.2 else 'NOT met'}",
        f"- interactive load used {a.interactive_busy / a.capacity:.1%} of capacity in A",
    ]


def git_rev() -> str:
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        return (
            subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT)
            .decode()
            .strip()
        )
    return "?"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="short smoke run (numbers not meaningful)")
    ap.add_argument("--threshold", type=float, default=Params.threshold)
    ap.add_argument("--rate", type=float, default=Params.interactive_rate)
    ap.add_argument("--no-write", action="store_true", help="do not write the results file")
    args = ap.parse_args()
    p = Params(threshold=args.threshold, interactive_rate=args.rate)
    if args.quick:
        p = Params(
            threshold=args.threshold,
            interactive_rate=args.rate,
            interactive_seconds=8,
            batch_alone=200,
            batch_mixed=300,
        )
    with tempfile.TemporaryDirectory(prefix="verbund-bench-batch-") as tmp:
        started = time.monotonic()
        phases = bench(p, Path(tmp))
        took = time.monotonic() - started
    out = table(phases)
    lines = verdict(phases)
    print()
    print(out)
    print("\n".join(lines))
    print(f"(run took {took:.0f} s)")
    if args.no_write or args.quick:
        return
    import httpx as _h
    import starlette
    import uvicorn

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        "# Batch benchmark: batch work in spare capacity\n\n"
        f"Date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}; "
        f"verbund {git_rev()}; Python {platform.python_version()}; starlette "
        f"{starlette.__version__}, uvicorn {uvicorn.__version__}, httpx {_h.__version__}.\n"
        f"Machine: {platform.machine()}, {os.cpu_count()} cores ({platform.platform()}), "
        "shared with other jobs while it ran.\n\n"
        "Command: `PYTHONPATH=src:. python -m benchmarks.batch.run`\n\n"
        f"Set-up: {p.engines} synthetic engines (benchmarks/batch/engine.py), {p.slots} slots "
        f"each, prefill {p.prefill_ms:.0f} ms, {p.decode_ms:.0f} ms per token, {p.tokens} "
        f"tokens per request; one access point (`verbund gateway`, SQLite store); "
        f"`batch.utilisation_threshold = {p.threshold}`; interactive: streamed chat, Poisson "
        f"arrivals at {p.interactive_rate:.0f}/s; batches of {p.batch_alone} (alone) and "
        f"{p.batch_mixed} (with interactive load) items. Capacity = slots x time; shares are "
        "busy slot-seconds measured by the engines.\n\n"
        f"{out}\n\n" + "\n".join(lines) + f"\n\nParameters: `{json.dumps(asdict(p))}`\n\n"
        "How to read it: the batch fills slots up to the utilisation threshold, so interactive "
        "requests seldom find an engine full (the 'found no free slot' count); what remains of "
        "a TTFT rise is the access point's own event loop, which relays the batch requests "
        "too, and CPU contention on the machine: compare the stall counts and the access "
        "point's GET /healthz p99 between phases.\n"
    )
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
