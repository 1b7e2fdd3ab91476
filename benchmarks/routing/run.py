"""Routing benchmark: Verbund's router against baseline policies on the same engines.

For every workload and every policy (``round_robin``, ``random``, ``least_outstanding``,
``score``) it starts fresh simulated engines (``python -m verbund.simengine``; empty
queues and caches), one access point (``verbund gateway``) with ``[routing] policy`` set,
and sends open-loop streamed load at a fixed fraction of the engines' capacity. It prints
a table and writes ``benchmarks/results/routing.md`` and ``routing.json``.

    python -m benchmarks.routing.run --quick          # about 4-5 minutes
    python -m benchmarks.routing.run                  # 30 s a run
    python -m benchmarks.routing.run --workloads prefix --policies least_outstanding,score
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.routing._load import run_open_loop, summarise
from benchmarks.routing._report import check_targets, environment, render_markdown, table
from benchmarks.routing._workloads import Workload, workloads
from harness.gateway import GatewayProcess
from harness.polling import poll
from harness.ports import free_port
from harness.simengine import EngineProcess, Site, engine_federation

POLICIES = ["round_robin", "random", "least_outstanding", "score"]
RESULTS = Path(__file__).resolve().parent.parent / "results"


class Engines:
    """A workload's engines, fresh for every policy: restarted, or reset when idle."""

    def __init__(self, workload: Workload, work: Path, restart: bool) -> None:
        self.restart = restart
        self.procs = {e.spec.name: EngineProcess(e.spec, work) for e in workload.engines}
        self.sites: dict[str, Site] = {}
        for e in workload.engines:
            site = self.sites.setdefault(e.site, Site(e.site, e.region, []))
            site.engines.append((e.spec, self.procs[e.spec.name].url))

    def fresh(self) -> None:
        """Empty queues and caches: a restart, or ``POST /_sim/reset`` once idle."""
        for proc in self.procs.values():
            if self.restart and proc.running:
                proc.stop()
            if not proc.running:
                proc.launch()
        for proc in self.procs.values():
            proc.wait_ready()
            if not self.restart:
                poll(
                    lambda p=proc: httpx.post(p.url + "/_sim/reset", timeout=5).status_code == 200,
                    f"engine {proc.spec.name} to be idle for a reset",
                    30,
                    every=0.2,
                )

    def prefix_hit_rate(self) -> float:
        cached = prompt = 0
        for proc in self.procs.values():
            if proc.running:
                stats = proc.stats()
                cached += stats["cached_tokens"]
                prompt += stats["prompt_tokens"]
        return cached / prompt if prompt else 0.0

    def close(self) -> None:
        for proc in self.procs.values():
            proc.stop()


def run_one(
    workload: Workload,
    engines: Engines,
    policy: str,
    duration: float,
    tail: float,
    seed: int,
    work: Path,
) -> dict[str, Any]:
    """One policy on one workload: fresh engines, an access point started for it alone."""
    cfg = engine_federation(
        work, free_port(), list(engines.sites.values()), policy=policy,
        models=workload.models, home_site="west",
    )  # fmt: skip
    gateway = GatewayProcess(cfg, work)
    try:
        engines.fresh()
        gateway.serve()
        rate = workload.capacity() * workload.load
        events = []
        if workload.kill:
            victim = engines.procs[workload.kill]

            async def kill() -> None:
                await asyncio.to_thread(victim.kill)

            events.append((workload.kill_at * duration, kill))
        outcomes = asyncio.run(
            run_open_loop(gateway.url, gateway.key, workload, rate, duration, tail, seed, events)
        )
    finally:
        gateway.stop()
    result = summarise(outcomes, rate, duration)
    result["prefix_hit_rate"] = engines.prefix_hit_rate()
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="6 s a run (about 4-5 minutes in all)")
    p.add_argument("--duration", type=float, help="seconds of arrivals a run (default 30)")
    p.add_argument("--tail", type=float, help="seconds to wait for stragglers (default 30)")
    p.add_argument("--workloads", default="uniform,skewed,prefix,kill")
    p.add_argument("--policies", default=",".join(POLICIES))
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", type=Path, default=RESULTS, help="folder for routing.md/.json")
    p.add_argument("--keep", action="store_true", help="keep the logs of engines and gateway")
    p.add_argument(
        "--engines",
        choices=["restart", "reset"],
        help="between policies: restart the engines (default) or reset them through "
        "POST /_sim/reset when idle (default with --quick: the same empty queues and "
        "caches, without the start-up time)",
    )
    args = p.parse_args(argv)
    duration = args.duration or (6.0 if args.quick else 30.0)
    tail = args.tail or (6.0 if args.quick else 30.0)
    known = workloads()
    names = [w for w in args.workloads.split(",") if w]
    policies = [x for x in args.policies.split(",") if x]
    bad = [w for w in names if w not in known] + [x for x in policies if x not in POLICIES]
    if bad:
        p.error(f"unknown workloads/policies: {', '.join(bad)}")

    env = environment()
    began = time.monotonic()
    runs: list[dict[str, Any]] = []
    restart = args.engines == "restart" if args.engines else not args.quick
    tmp = tempfile.mkdtemp(prefix="verbund-bench-")
    try:
        for name in names:
            # one folder a workload: the access points share its store (migrated once)
            work = Path(tmp) / name
            work.mkdir()
            engines = Engines(known[name], work, restart)
            try:
                for policy in policies:
                    wl = workloads()[name]  # fresh sessions for every policy
                    print(f"-- {name} / {policy} ...", end=" ", flush=True, file=sys.stderr)
                    t = time.monotonic()
                    result = run_one(wl, engines, policy, duration, tail, args.seed, work)
                    print(f"{time.monotonic() - t:.0f}s", file=sys.stderr)
                    runs.append({"workload": name, "policy": policy, **result})
            finally:
                engines.close()
    finally:
        if args.keep:
            print(f"logs kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    env["load_after"] = os.getloadavg()
    env["wall_seconds"] = round(time.monotonic() - began, 1)
    setup = {
        "duration_s": duration,
        "tail_s": tail,
        "seed": args.seed,
        "engines_between_policies": "restart" if restart else "reset",
        "workloads": {
            n: {
                "description": known[n].description,
                "load": known[n].load,
                "capacity_rps": round(known[n].capacity(), 2),
                "engines": [
                    {
                        "site": e.site,
                        "name": e.spec.name,
                        "models": list(e.spec.models),
                        "slots": e.spec.slots,
                        "prefill_ms_per_token": e.spec.prefill_ms_per_token,
                        "decode_ms_per_token": e.spec.decode_ms_per_token,
                        "prefix_cache_tokens": e.spec.prefix_cache_tokens,
                    }
                    for e in known[n].engines
                ],
            }
            for n in names
        },
    }
    targets = check_targets(runs)
    print(table(runs))
    for line in targets["lines"]:
        print(line)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "routing.json").write_text(
        json.dumps(
            {"environment": env, "setup": setup, "runs": runs, "targets": targets},
            indent=2,
            default=str,
        )
        + "\n",
        encoding="utf-8",
    )
    (args.out / "routing.md").write_text(
        render_markdown(env, setup, runs, targets), encoding="utf-8"
    )
    print(f"wrote {args.out / 'routing.md'} and routing.json", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
