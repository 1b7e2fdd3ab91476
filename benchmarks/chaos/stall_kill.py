"""The issue-3 comparison run against real llama.cpp backends (the demo federation):
90 chat requests at concurrency 4, one backend killed (SIGKILL) or stalled (SIGSTOP,
connections accepted but never answered) after the first dozen. Prints failures, latency
percentiles and how long the faulty backend kept receiving new requests; writes
benchmarks/results/chaos.md. Target (no longer asserted in CI, where a loaded machine
makes it flaky): p99 latency during the fault at most ``P99_TARGET_S`` (3 s).

    .venv/bin/python -m benchmarks.chaos.stall_kill [--requests 90] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx

from benchmarks.report import markdown_table
from harness.demo import start_demo

MODEL = "smollm2-135m"
P99_TARGET_S = 3.0
RESULTS = Path(__file__).resolve().parents[1] / "results"


@dataclass
class Outcome:
    started: float
    ended: float
    status: int
    site: str


def run(fault: str, n: int, concurrency: int, max_tokens: int) -> dict[str, object]:
    state = Path(tempfile.mkdtemp(prefix=f"verbund-chaos-{fault}-"))
    demo = start_demo(state / "state")
    victim_pid = demo.backend_pids()["west-llama-1"]
    key = demo.key("uni-a")
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    counter = iter(range(n))
    fault_at: list[float] = []
    errors: list[str] = []

    def worker() -> None:
        with httpx.Client(timeout=120, trust_env=False) as client:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                if i == 12 and not fault_at:
                    os.kill(victim_pid, signal.SIGKILL if fault == "kill" else signal.SIGSTOP)
                    fault_at.append(time.monotonic())
                t0 = time.monotonic()
                try:
                    r = client.post(
                        demo.url + "/v1/chat/completions",
                        headers={"authorization": f"Bearer {key}"},
                        json={
                            "model": MODEL,
                            "max_tokens": max_tokens,
                            "messages": [{"role": "user", "content": f"Say a word ({i})."}],
                        },
                    )
                    o = Outcome(
                        t0, time.monotonic(), r.status_code, r.headers.get("x-verbund-site", "")
                    )
                    if r.status_code != 200:
                        errors.append(r.json()["error"]["message"])
                except httpx.HTTPError:
                    o = Outcome(t0, time.monotonic(), 0, "")
                with lock:
                    outcomes.append(o)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with demo.admin() as admin:
        west = next(s for s in admin.get("/admin/sites").json()["sites"] if s["name"] == "rz-west")[
            "backends"
        ][0]
    if fault == "stall":
        os.kill(victim_pid, signal.SIGCONT)
    demo.stop()
    t_fault = fault_at[0]
    lat = sorted(o.ended - o.started for o in outcomes)
    during = sorted(o.ended - o.started for o in outcomes if o.started >= t_fault - 5)
    to_victim_after = [o for o in outcomes if o.site == "rz-west" and o.started > t_fault + 1]
    return {
        "fault": fault,
        "requests": len(outcomes),
        "failed": sum(o.status != 200 for o in outcomes),
        "p50_s": round(statistics.median(lat), 3),
        "p99_s": round(lat[int(0.99 * (len(lat) - 1))], 3),
        "p99_during_fault_s": round(during[int(0.99 * (len(during) - 1))], 3),
        f"p99_during_fault_within_{P99_TARGET_S:g}s": during[int(0.99 * (len(during) - 1))]
        <= P99_TARGET_S,
        "max_s": round(lat[-1], 3),
        "served_by_faulty_after_1s": len(to_victim_after),
        "faulty_backend_failures_seen": west["failures"],
        "statuses": dict(sorted(Counter(o.status for o in outcomes).items())),
        "errors": sorted(Counter(errors).items())[:5],
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--requests", type=int, default=90)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--max-tokens", type=int, default=24)
    args = p.parse_args()
    rows = [run(f, args.requests, args.concurrency, args.max_tokens) for f in ("kill", "stall")]
    cols = list(rows[0])
    text = markdown_table(rows, cols)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    header = (
        f"# Chaos run: real llama.cpp backends\n\n{time.strftime('%Y-%m-%d %H:%M')} UTC, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}; "
        f"{args.requests} requests at concurrency {args.concurrency}, "
        f"max_tokens {args.max_tokens}; fault after request 12.\n\n"
        "Command: `.venv/bin/python -m benchmarks.chaos.stall_kill`\n\n"
    )
    (RESULTS / "chaos.md").write_text(header + text + "\n")
    (RESULTS / "chaos.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
