"""Time to first token through the access point versus straight to the same llama.cpp
backend, interleaved in one run on the demo federation; and the demo's start-up time.

    .venv/bin/python -m benchmarks.first_token [--requests 30]

Writes benchmarks/results/first_token.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks.report import machine, publish
from harness.demo import start_demo

MODEL = "smollm2-135m"


def ttft(client: httpx.Client, url: str, headers: dict[str, str], i: int, tag: str) -> float:
    # a prompt of its own for every request: llama.cpp reuses the previous prompt's cache
    body = {
        "model": MODEL,
        "stream": True,
        "max_tokens": 8,
        "messages": [{"role": "user", "content": f"Say one word ({tag}{i})."}],
    }
    t0 = time.perf_counter()
    with client.stream("POST", url + "/v1/chat/completions", json=body, headers=headers) as r:
        r.raise_for_status()
        first = None
        for line in r.iter_lines():
            if (
                first is None
                and line.startswith("data:")
                and '"content"' in line
                and ('"content": ""' not in line)
            ):
                first = time.perf_counter() - t0
    if first is None:
        raise RuntimeError("no content")
    return first


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--requests", type=int, default=30)
    args = p.parse_args()
    began = time.monotonic()
    demo = start_demo(Path(tempfile.mkdtemp(prefix="verbund-ttft-")) / "state")
    ready = time.monotonic() - began
    try:
        backend = demo.info["backends"]["west-llama-1"]["url"]
        auth = {"authorization": f"Bearer {demo.key('klinikum-c')}"}  # sensitive: rz-west only
        direct, via = [], []
        with httpx.Client(timeout=60, trust_env=False) as c:
            for i in range(2):  # warm-up
                ttft(c, backend, {}, i, "w")
                ttft(c, demo.url, auth, i, "x")
            for i in range(args.requests):  # interleaved, alternating which goes first
                if i % 2:
                    direct.append(ttft(c, backend, {}, i, "d"))
                    via.append(ttft(c, demo.url, auth, i, "v"))
                else:
                    via.append(ttft(c, demo.url, auth, i, "v"))
                    direct.append(ttft(c, backend, {}, i, "d"))
    finally:
        demo.stop()

    def row(name: str, xs: list[float]) -> str:
        xs = sorted(xs)
        p90 = xs[int(0.9 * (len(xs) - 1))]
        return f"| {name} | {statistics.median(xs) * 1000:.1f} | {p90 * 1000:.1f} | {len(xs)} |"

    added = [v - d for v, d in zip(via, direct, strict=True)]
    table = "\n".join(
        [
            "| path | TTFT p50 ms | TTFT p90 ms | n |",
            "|---|---|---|---|",
            row("direct to llama.cpp (rz-west)", direct),
            row("through the access point", via),
            f"| added by the access point (pairwise) | {statistics.median(added) * 1000:.1f} | "
            f"{sorted(added)[int(0.9 * (len(added) - 1))] * 1000:.1f} | {len(added)} |",
        ]
    )
    text = (
        f"# Time to first token: access point vs direct\n\n{machine()}. "
        "Command: `.venv/bin/python -m benchmarks.first_token`"
        f"\n\n`verbund up` ready after {ready:.1f} s (all demo model servers).\n\n{table}\n"
    )
    publish("first_token.md", text)


if __name__ == "__main__":
    main()
