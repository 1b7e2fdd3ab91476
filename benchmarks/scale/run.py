"""The access point's cost against the size of the federation, not the load.

One ``verbund gateway`` in front of one fast fixed-answer backend (nginx serving a static
chat completion) that every configured backend points at, 10,000 API keys in the store,
open-loop load at 300 requests/s spread over 50 of the keys. For 6 (3 sites x 2), 400
(100 x 4) and 2,000 (1,000 x 2) backends it measures:

- start-up: from launching the process to ``/readyz`` answering 200;
- RSS after start-up and after the load;
- idle CPU: the access point's CPU over ``--idle`` seconds without requests;
- probe rate: probes per second the backend saw while idle (nginx logs ``/v1/models``);
- added p50/p99: the access point's latency minus the backend's own at the same rate;
- shed: requests refused with 503 ``overloaded``.

Targets: at 400 backends added p99 <= 10 ms, idle CPU <= 3 % of a core, RSS <= 150 MB;
at 2,000 backends no request shed and start-up <= 10 s. Prints a table and writes
``benchmarks/results/scale.md``.

    .venv/bin/python -m benchmarks.scale.run                 # 6, 400 and 2000
    .venv/bin/python -m benchmarks.scale.run --cases 6,400   # about 3 minutes
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.overhead.loadgen import GeneratorPool, Job, Result, Template
from benchmarks.overhead.procs import cpu_seconds, rss_bytes, tree
from benchmarks.overhead.servers import (
    MODEL,
    ensure_nginx,
    start_mock,
)
from benchmarks.report import markdown_table
from harness import federation as fed
from harness.gateway import GatewayProcess
from harness.ports import free_port
from harness.processes import Process

RESULTS = Path(__file__).resolve().parents[1] / "results"
CASES = {6: (3, 2), 400: (100, 4), 2000: (1000, 2)}
INSTITUTION = "scale-uni"
KEYS = 10_000
LOAD_KEYS = 50
RATE = 300.0
TARGETS = (
    "400 backends: added p99 <= 10 ms, idle CPU <= 3 %, RSS <= 150 MB; "
    "2,000: no shed, start-up <= 10 s"
)


def pct(values: Any, q: float) -> float:
    data = sorted(values)
    return data[min(len(data) - 1, int(q / 100 * len(data)))] if data else float("nan")


def start_backend(nginx: str, work: Path) -> tuple[Process, int, Path]:
    """The overhead benchmark's nginx mock; probes logged to count them."""
    probes = work / "backend-probes.log"
    mock = start_mock(nginx, work, probes_log=probes)
    return mock.procs[0], mock.port, probes


def config(work: Path, store: Path, port: int, backend: int, sites: int, per_site: int) -> Any:
    url = f"http://127.0.0.1:{backend}"
    return fed.federation(
        "scale",
        work,
        [
            fed.site(
                f"s{i}",
                "NW",
                [fed.backend(f"s{i}-b{j}", url, [MODEL]) for j in range(per_site)],
                max_data_class="sensitive",
            )
            for i in range(sites)
        ],
        port=port,
        models=[MODEL],
        institutions=[fed.institution(INSTITUTION, home_region="NW")],
        gateway={"home_site": "s0"},
        store={"url": f"sqlite+aiosqlite:///{store}"},
    )


def make_keys(cfg: Any, n: int) -> list[str]:
    """``n`` API keys straight through the access point's own services (no HTTP)."""
    from verbund.config import parse_config
    from verbund.gateway import create_app

    async def go() -> list[str]:
        app = create_app(parse_config(cfg), admin_key="vbadmin-scale-0123456789", background=False)
        svc = app.state.services
        keys: list[str] = []
        async with app.router.lifespan_context(app):
            for i in range(n):
                keys.append((await svc.keys.create(INSTITUTION, f"k{i}", actor="bench")).key)
        return keys

    return asyncio.run(go())


def load(pool: GeneratorPool, port: int, keys: list[str], seconds: float) -> Result:
    body = json.dumps(
        {"model": MODEL, "messages": [{"role": "user", "content": "Hallo"}], "max_tokens": 8}
    ).encode()
    path = "/v1/chat/completions"
    templates = tuple(
        Template("127.0.0.1", port, path, body, (("Authorization", f"Bearer {k}"),)) for k in keys
    )
    job = Job(templates, tuple(1.0 for _ in templates), seconds, rate=RATE, timeout=15.0)
    return pool.run(job)


def lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def measure(
    n: int,
    nginx: str,
    backend: int,
    probes: Path,
    store: Path,
    keys: list[str],
    args: Any,
    pool: GeneratorPool,
    direct: Result,
) -> dict[str, Any]:
    sites, per_site = CASES[n]
    work = Path(tempfile.mkdtemp(prefix=f"verbund-scale-{n}-"))
    port = free_port()
    gw = GatewayProcess(config(work, store, port, backend, sites, per_site), work)
    began = time.monotonic()
    gw.start(120)
    startup = time.monotonic() - began
    pid = gw.process.pid
    try:
        time.sleep(args.settle)  # a duration to let start-up work finish, not a wait
        pids = tree(pid)
        rss_idle = rss_bytes(pids)
        cpu0, probes0, t0 = cpu_seconds(pids), lines(probes), time.monotonic()
        time.sleep(args.idle)  # the idle measurement window
        idle_s = time.monotonic() - t0
        idle_cpu = (cpu_seconds(pids) - cpu0) / idle_s
        probe_rate = (lines(probes) - probes0) / idle_s
        res = load(pool, port, keys[:LOAD_KEYS], args.seconds)
        rss_load = rss_bytes(tree(pid))
    finally:
        gw.stop()
        shutil.rmtree(work, ignore_errors=True)
    shed = res.errors.get("503", 0)
    lat_ms = [x * 1000 for x in res.latency]
    direct_ms = [x * 1000 for x in direct.latency]
    return {
        "backends": n,
        "startup_s": round(startup, 2),
        "rss_idle_mb": round(rss_idle / 2**20),
        "rss_load_mb": round(rss_load / 2**20),
        "idle_cpu_pct": round(idle_cpu * 100, 1),
        "probes_per_s": round(probe_rate, 1),
        "sent": res.sent,
        "ok": res.ok,
        "shed": shed,
        "errors": dict(res.errors),
        "p50_ms": round(pct(lat_ms, 50), 2),
        "p99_ms": round(pct(lat_ms, 99), 2),
        "added_p50_ms": round(pct(lat_ms, 50) - pct(direct_ms, 50), 2),
        "added_p99_ms": round(pct(lat_ms, 99) - pct(direct_ms, 99), 2),
    }


def verdict(r: dict[str, Any]) -> str:
    n = r["backends"]
    if n == 400:
        ok = r["added_p99_ms"] <= 10 and r["idle_cpu_pct"] <= 3 and r["rss_load_mb"] <= 150
    elif n == 2000:
        ok = r["shed"] == 0 and r["startup_s"] <= 10
    else:
        return "-"
    return "met" if ok else "MISSED"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--cases", default="6,400,2000")
    p.add_argument("--seconds", type=float, default=20.0, help="load per case")
    p.add_argument("--idle", type=float, default=10.0, help="idle window per case")
    p.add_argument("--settle", type=float, default=5.0, help="after start-up, before idle")
    p.add_argument("--keys", type=int, default=KEYS)
    args = p.parse_args()
    cases = [int(c) for c in args.cases.split(",")]
    work = Path(tempfile.mkdtemp(prefix="verbund-scale-"))
    nginx = ensure_nginx()
    proc, backend, probes = start_backend(nginx, work)
    pool = GeneratorPool(2)
    rows: list[dict[str, Any]] = []
    try:
        store = work / "keys.db"
        began = time.monotonic()
        keys = make_keys(config(work / "keys", store, free_port(), backend, 1, 1), args.keys)
        print(f"{len(keys)} keys in {time.monotonic() - began:.0f}s", flush=True)
        direct = load(pool, backend, keys[:LOAD_KEYS], args.seconds)
        print(
            f"backend alone at {RATE:g}/s: p50 {pct(direct.latency, 50) * 1000:.2f} ms, "
            f"p99 {pct(direct.latency, 99) * 1000:.2f} ms",
            flush=True,
        )
        for n in cases:
            row = measure(n, nginx, backend, probes, store, keys, args, pool, direct)
            row["target"] = verdict(row)
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        pool.close()
        proc.stop()
        shutil.rmtree(work, ignore_errors=True)
    cols = [
        "backends", "startup_s", "rss_idle_mb", "rss_load_mb", "idle_cpu_pct", "probes_per_s",
        "sent", "shed", "added_p50_ms", "added_p99_ms", "target",
    ]  # fmt: skip
    text = markdown_table(rows, cols)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    header = (
        f"# Scale: the access point's cost against the number of backends\n\n"
        f"{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores (shared), Python "
        f"{platform.python_version()}; {args.keys} keys in the store, open loop at "
        f"{RATE:g} requests/s for {args.seconds:g} s over {LOAD_KEYS} keys, one nginx "
        f"fixed-answer backend behind every configured backend; idle window "
        f"{args.idle:g} s. Added latency = access point minus the backend alone at the same "
        f"rate. Targets: {TARGETS}.\n\n"
        f"Command: `.venv/bin/python -m benchmarks.scale.run --cases {args.cases}`\n\n"
    )
    (RESULTS / "scale.md").write_text(header + text + "\n")


if __name__ == "__main__":
    main()
