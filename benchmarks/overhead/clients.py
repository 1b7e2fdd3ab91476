"""CPU cost of one upstream call with the HTTP clients an access point could use.

The access point's own outgoing call is a large part of its per-request work (see the
profile in docs/performance.md). This measures, in one process on a uvloop event loop,
the CPU time per POST of the fixed chat completion to the nginx mock, with ``c``
concurrent callers sharing one client (keep-alive pool):

- ``httpx``: ``httpx.AsyncClient`` (httpcore + anyio + h11), as Verbund uses it now;
- ``aiohttp``: ``aiohttp.ClientSession`` (llhttp parser, its own connector);
- ``httptools``: a bare asyncio protocol with httptools (the floor of a Python client).

aiohttp is not a Verbund dependency; run this with an interpreter that has it, e.g. the
LiteLLM benchmark venv::

    PYTHONPATH=src:. .venv-litellm/bin/python -m benchmarks.overhead.clients
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import uvloop

from benchmarks.overhead import servers
from benchmarks.overhead.loadgen import Result, Template, _Client

Call = Callable[[], Awaitable[None]]


async def _measure(call: Call, concurrency: int, n: int) -> tuple[float, float]:
    """CPU µs and wall µs per request for ``n`` requests from ``concurrency`` callers."""
    for _ in range(20):  # open connections, warm caches
        await call()
    per = n // concurrency

    async def worker() -> None:
        for _ in range(per):
            await call()

    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    total = per * concurrency
    return cpu / total * 1e6, wall / total * 1e6


async def run(port: int, n: int) -> list[tuple[str, int, float, float]]:
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    body = servers.CHAT_BODY
    headers = {"content-type": "application/json"}
    out = []
    for c in (1, 16, 64):
        async with httpx.AsyncClient(
            limits=httpx.Limits(max_connections=1000, max_keepalive_connections=100)
        ) as hx:

            async def call_httpx(hx: httpx.AsyncClient = hx) -> None:
                r = await hx.post(url, content=body, headers=headers)
                assert r.status_code == 200 and r.content

            out.append(("httpx", c, *await _measure(call_httpx, c, n)))
        try:
            import aiohttp
        except ImportError:
            pass
        else:
            async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=1000, keepalive_timeout=60)
            ) as ah:

                async def call_aiohttp(ah: aiohttp.ClientSession = ah) -> None:
                    async with ah.post(url, data=body, headers=headers) as r:
                        assert r.status == 200 and await r.read()

                out.append(("aiohttp", c, *await _measure(call_aiohttp, c, n)))
        client = _Client(1000)
        tpl = servers.Target("mock", port, "/v1/chat/completions", "").template(False)
        raw = tpl.raw()

        async def call_raw(client: _Client = client, tpl: Template = tpl, raw: bytes = raw) -> None:
            res = Result()
            await client.request(tpl, raw, time.perf_counter(), 10.0, res)
            assert res.ok == 1

        out.append(("httptools", c, *await _measure(call_raw, c, n)))
        client.close()
    return out


def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="verbund-bench-clients-"))
    mock = servers.start_mock(servers.ensure_nginx(), workdir)
    try:
        rows = uvloop.run(run(mock.port, 4000))
    finally:
        mock.stop()
    print("| client | concurrency | CPU µs/request | wall µs/request |")
    print("|---|---:|---:|---:|")
    for name, c, cpu, wall in rows:
        print(f"| {name} | {c} | {cpu:.0f} | {wall:.0f} |")


if __name__ == "__main__":
    main()
