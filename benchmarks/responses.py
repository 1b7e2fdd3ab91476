"""The Responses API's translation overhead: ``/v1/responses`` versus
``/v1/chat/completions`` through one access point to the same backend, interleaved in
one run, streamed and not. The backend is the harness's stub model server (a fixed
answer, four streamed words), so the difference is the access point's own work:
checking and translating the request, the answer or the events.

    .venv/bin/python -m benchmarks.responses [--requests 200]

Writes benchmarks/results/responses.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from benchmarks.report import machine, markdown_table, publish
from harness.load import percentile
from harness.stub_backend import MODEL, stub_gateway

TOOLS = [
    {
        "type": "function",
        "name": f"tool_{i}",
        "description": "A tool of a coding assistant. " * 8,
        "parameters": {"type": "object", "properties": {"path": {"type": "string"}}},
    }
    for i in range(8)
]


def chat_body(i: int, stream: bool) -> dict[str, object]:
    tools = [
        {"type": "function", "function": {k: v for k, v in t.items() if k != "type"}} for t in TOOLS
    ]
    return {
        "model": MODEL,
        "stream": stream,
        "messages": [
            {"role": "system", "content": "You are a coding assistant. " * 40},
            {"role": "user", "content": f"Question {i}"},
        ],
        "tools": tools,
    }


def responses_body(i: int, stream: bool) -> dict[str, object]:
    return {
        "model": MODEL,
        "stream": stream,
        "store": False,
        "instructions": "You are a coding assistant. " * 40,
        "input": [{"role": "user", "content": [{"type": "input_text", "text": f"Question {i}"}]}],
        "tools": [*TOOLS, {"type": "web_search"}],
    }


def timed(
    client: httpx.Client, path: str, body: dict[str, object], headers: dict[str, str]
) -> float:
    t0 = time.perf_counter()
    with client.stream("POST", path, json=body, headers=headers) as r:
        r.raise_for_status()
        for _ in r.iter_bytes():
            pass
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--requests", type=int, default=200)
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="verbund-responses-"))
    kinds: dict[str, tuple[str, Callable[[int, bool], dict[str, object]], bool]] = {
        "chat completions": ("/v1/chat/completions", chat_body, False),
        "responses": ("/v1/responses", responses_body, False),
        "chat completions, stream": ("/v1/chat/completions", chat_body, True),
        "responses, stream": ("/v1/responses", responses_body, True),
    }
    times: dict[str, list[float]] = {k: [] for k in kinds}
    with stub_gateway(tmp, "ap-bench") as gw:
        headers = {"authorization": f"Bearer {gw.create_key('uni-a')['key']}"}
        with httpx.Client(base_url=gw.url, timeout=30, trust_env=False) as c:
            for i in range(10):  # warm-up
                for path, body, stream in kinds.values():
                    timed(c, path, body(i, stream), headers)
            order = list(kinds)
            for i in range(args.requests):  # interleaved, rotating which goes first
                for name in order[i % 4 :] + order[: i % 4]:
                    path, body, stream = kinds[name]
                    times[name].append(timed(c, path, body(i, stream), headers))
    rows = []
    for name, xs in times.items():
        base = times[name.replace("responses", "chat completions")]
        extra = statistics.median(xs) - statistics.median(base)
        rows.append(
            {
                "request": name,
                "p50 ms": f"{statistics.median(xs) * 1000:.2f}",
                "p90 ms": f"{percentile(xs, 90) * 1000:.2f}",
                "p99 ms": f"{percentile(xs, 99) * 1000:.2f}",
                "p50 vs chat ms": f"{extra * 1000:+.2f}",
                "n": len(xs),
            }
        )
    table = markdown_table(rows, list(rows[0]))
    publish(
        "responses.md",
        "# Responses API translation overhead\n\n"
        f"{machine()}; "
        f"`python -m benchmarks.responses --requests {args.requests}`.\n\n"
        "The same request (a 1 KB system prompt, one user turn, eight function tools; the "
        "Responses form also carries `web_search`, which is dropped) sent as chat "
        "completions and as the Responses API through one access point to the harness's "
        "stub model server, interleaved; whole-answer latency at the client. The "
        "difference is the access point's translation of request and answer (or events).\n\n"
        f"{table}\n",
    )


if __name__ == "__main__":
    main()
