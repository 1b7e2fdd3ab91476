"""Open-loop load: Poisson arrivals at a fixed rate, every request streamed, all recorded.

Arrivals do not wait for answers (an open loop), so a policy that lets a queue grow is
punished as real users would punish it. The run is bounded: arrivals stop after
``duration`` seconds, and whatever is still unanswered ``tail`` seconds later is cut off
and counted as failed.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from benchmarks.routing._workloads import Request, Workload


@dataclass
class Outcome:
    start: float  # seconds since the run began
    end: float = math.nan
    ttft: float | None = None  # first content chunk, seconds after start
    first_event: float | None = None
    status: int = 0
    site: str = ""
    tokens: int = 0
    tokens_in_window: int = 0  # content chunks received while arrivals were still running
    done: bool = False
    error: str = ""


async def _one(
    client: httpx.AsyncClient,
    url: str,
    key: str,
    req: Request,
    out: Outcome,
    clock: Callable[[], float],
    workload: Workload,
    window_end: float,
) -> None:
    body = {
        "model": req.model,
        "messages": req.messages,
        "max_tokens": req.max_tokens,
        "stream": True,
    }
    parts: list[str] = []
    try:
        async with client.stream(
            "POST",
            url + "/v1/chat/completions",
            json=body,
            headers={"authorization": f"Bearer {key}"},
        ) as r:
            out.status = r.status_code
            out.site = r.headers.get("x-verbund-site", "")
            if r.status_code != 200:
                out.error = f"HTTP {r.status_code}: {(await r.aread())[:200]!r}"
                return
            async for line in r.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if out.first_event is None:
                    out.first_event = clock() - out.start
                if data == "[DONE]":
                    out.done = True
                    break
                event = json.loads(data)
                if "error" in event:
                    out.error = f"error event {event['error'].get('code')}"
                    break
                for choice in event.get("choices") or []:
                    content = (choice.get("delta") or {}).get("content")
                    if content:
                        if out.ttft is None:
                            out.ttft = clock() - out.start
                        out.tokens += 1
                        if clock() <= window_end:
                            out.tokens_in_window += 1
                        parts.append(content)
            if not out.done and not out.error:
                out.error = "stream ended without [DONE]"
    except httpx.HTTPError as exc:
        out.error = f"{type(exc).__name__}: {exc}"[:200]
    finally:
        out.end = clock() - out.start
        workload.finished(req, "".join(parts) if out.done else "")


async def run_open_loop(
    url: str,
    key: str,
    workload: Workload,
    rate: float,
    duration: float,
    tail: float,
    seed: int,
    events: Sequence[tuple[float, Callable[[], Awaitable[Any]]]] = (),
) -> list[Outcome]:
    """Send Poisson arrivals at ``rate``/s for ``duration`` s; ``events`` run at their times."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()

    def clock() -> float:
        return loop.time() - t0

    arrivals_rng, content_rng = random.Random(seed), random.Random(seed + 1)
    arrivals: list[float] = []
    t = arrivals_rng.expovariate(rate)
    while t < duration:
        arrivals.append(t)
        t += arrivals_rng.expovariate(rate)

    async def at(when: float, action: Callable[[], Awaitable[Any]]) -> None:
        await asyncio.sleep(max(0.0, when - clock()))
        await action()

    side = [asyncio.create_task(at(when, action)) for when, action in events]
    outcomes: list[Outcome] = []
    tasks: list[asyncio.Task[None]] = []
    limits = httpx.Limits(max_connections=2000, max_keepalive_connections=200)
    timeout = httpx.Timeout(duration + tail, connect=10)
    async with httpx.AsyncClient(limits=limits, timeout=timeout, trust_env=False) as client:
        for when in arrivals:
            wait = when - clock()
            if wait > 0:
                await asyncio.sleep(wait)
            out = Outcome(start=clock())
            outcomes.append(out)
            req = workload.next_request(content_rng)
            tasks.append(
                asyncio.create_task(_one(client, url, key, req, out, clock, workload, duration))
            )
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=max(0.0, duration + tail - clock()))
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for out in outcomes:
            if not out.done and not out.error:
                out.error = "unfinished when the run was cut off"
    for task in side:
        if not task.done():
            task.cancel()
    await asyncio.gather(*side, return_exceptions=True)
    return outcomes


def percentile(values: Sequence[float], p: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


def summarise(outcomes: Sequence[Outcome], offered_rate: float, duration: float) -> dict[str, Any]:
    """Percentiles and rates of one run.

    TTFT covers every request that got content, plus those still waiting for it when the
    run was cut off, with their waiting time (a lower bound: a backlog is not hidden).
    Requests that failed with an error before any content are counted in ``failed``.
    """
    done = [o for o in outcomes if o.done]
    ttfts: list[float] = []
    censored = 0
    for o in outcomes:
        if o.ttft is not None:
            ttfts.append(o.ttft)
        elif o.error.startswith("unfinished"):
            censored += 1
            ttfts.append(o.end)
    window = max((o.start + o.end for o in done), default=0.0) - min(
        (o.start for o in outcomes), default=0.0
    )
    errors = Counter(o.error.split(":")[0] for o in outcomes if not o.done)
    return {
        "offered_rps": round(offered_rate, 2),
        "sent": len(outcomes),
        "ok": len(done),
        "failed": len(outcomes) - len(done),
        "failed_before_stream": sum(1 for o in outcomes if not o.done and o.first_event is None),
        "cut_off_waiting": censored,
        "ttft_p50": percentile(ttfts, 50),
        "ttft_p90": percentile(ttfts, 90),
        "ttft_p99": percentile(ttfts, 99),
        "e2e_p50": percentile([o.end for o in done], 50),
        "e2e_p99": percentile([o.end for o in done], 99),
        "throughput_rps": len(done) / window if window > 0 else 0.0,
        "tokens_per_s": sum(o.tokens_in_window for o in outcomes) / duration,
        "by_site": dict(sorted(Counter(o.site for o in done).items())),
        "errors": dict(errors),
    }
