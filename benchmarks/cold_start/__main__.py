"""On-demand models: time from the first request to the first token for a stopped model.

A real single-node Slurm (Debian's packages, ``harness/slurm.py``), a real site agent
(``verbund site``) with one on-demand model (SmolLM2-135M on llama.cpp, slurm launcher,
1 CPU), and a real access point (``verbund gateway``). Each run waits until the model is
``stopped`` (idle timeout, queue empty), then sends ``--burst`` streaming requests at
once and measures, per run:

- client time to first token of the first request (from send to the first ``data:``
  chunk; keep-alive comments do not count),
- its parts as the agent recorded them: Slurm queueing (submit -> job running) and
  engine start + model load (job running -> ``GET /v1/models`` answers); the rest is
  the agent's submit, the catalogue reaching the access point, routing and the first
  token itself,
- how many requests the model's queue held during the start (requests that got a
  keep-alive comment before their first token),
- the warm time to first token right after (same model, instance ready).

    python -m benchmarks.cold_start              # 5 runs, ~2-3 minutes
    python -m benchmarks.cold_start --runs 3

Results: ``benchmarks/results/cold_start.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import platform
import statistics
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.agent import AgentProcess
from harness.gateway import GatewayProcess
from harness.on_demand import on_demand_federation, on_demand_view, stream_chat
from harness.polling import poll
from harness.slurm import SlurmCluster, start_slurm

IDLE = 4.0
RESULTS = Path(__file__).resolve().parent.parent / "results"


def stream_once(gw: GatewayProcess) -> dict[str, Any]:
    """One streaming request: seconds to the first data chunk, keep-alives seen before."""
    status, lines = stream_chat(gw)
    data = [at for at, line in lines if line.startswith("data: ")]
    first = data[0] if data else None
    keepalives = sum(
        1 for at, line in lines if line == ": keep-alive" and (first is None or at < first)
    )
    return {"status": status, "ttft": first, "keepalives": keepalives}


def instances(agent: AgentProcess) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = on_demand_view(agent)["instances"]
    return got


def stopped(agent: AgentProcess, slurm: SlurmCluster) -> bool:
    live = [i for i in instances(agent) if i["state"] != "stopped"]
    return not live and "verbund-" not in slurm.run("squeue", "-h", "-o", "%j").stdout


def run(runs: int, burst: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="verbund-cold-start-"))
    rows: list[dict[str, Any]] = []
    with (
        start_slurm() as slurm,
        on_demand_federation(
            work, slurm, routing={"keepalive_seconds": 0.5}, idle_timeout=IDLE
        ) as (agent, gw),
    ):
        for n in range(runs):
            poll(lambda: stopped(agent, slurm), "the model to be stopped", 120, every=0.25)
            seen = {i["id"] for i in instances(agent)}
            with concurrent.futures.ThreadPoolExecutor(burst) as pool:
                results = list(pool.map(lambda _: stream_once(gw), range(burst)))
            (new,) = [i for i in instances(agent) if i["id"] not in seen]
            warm = stream_once(gw)
            first = min(r["ttft"] for r in results if r["ttft"] is not None)
            row = {
                "run": n + 1,
                "ttft_cold": round(first, 3),
                "queued": new["queued_seconds"],
                "load": new["load_seconds"],
                "rest": round(first - new["queued_seconds"] - new["load_seconds"], 3),
                "held": sum(1 for r in results if r["keepalives"] > 0),
                "ok": sum(1 for r in results if r["status"] == 200 and r["ttft"] is not None),
                "ttft_warm": round(warm["ttft"], 3),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    return {"runs": rows, "burst": burst}


def table(rows: list[dict[str, Any]], burst: int) -> str:
    head = (
        "| run | cold TTFT (s) | Slurm queueing (s) | engine start + load (s) | "
        "rest: submit, catalogue, route, first token (s) | requests held | answered | "
        "warm TTFT (s) |\n|---|---|---|---|---|---|---|---|\n"
    )
    body = "".join(
        f"| {r['run']} | {r['ttft_cold']:.3f} | {r['queued']:.3f} | {r['load']:.3f} | "
        f"{r['rest']:.3f} | {r['held']}/{burst} | {r['ok']}/{burst} | {r['ttft_warm']:.3f} |\n"
        for r in rows
    )

    def med(k: str) -> float:
        return statistics.median(float(r[k]) for r in rows)

    body += (
        f"| **median** | **{med('ttft_cold'):.3f}** | {med('queued'):.3f} | {med('load'):.3f} "
        f"| {med('rest'):.3f} | | | **{med('ttft_warm'):.3f}** |\n"
    )
    return head + body


VLLM_NOTE = """\
## What a vLLM start would add on a GPU site (published, **not measured here**)

This machine has no GPU and no vLLM; the numbers above are llama.cpp loading a 135M
GGUF from the local disk. On a GPU site the *engine start + load* column is where vLLM
differs, and it grows with the model: weights read from the shared file system into GPU
memory, `torch.compile` of the model (vLLM's V1 engine compiles by default; its
compilation cache under `~/.cache/vllm/torch_compile_cache` can be copied between
nodes to skip most of it, per vLLM's torch.compile design notes) and CUDA graph capture.

- vLLM ships `vllm bench startup`, which measures cold (no caches) and warm (cached
  compilation) start-up; run it on the site's nodes to fill this column for real.
- "Breaking the Ice: Analyzing Cold Start Latency in vLLM" (arXiv 2606.07362) breaks
  vLLM's start into six steps and finds it predominantly CPU-bound, with a model that
  predicts it from model and system parameters.
- vLLM's blog post "Zero-Reload Model Switching with vLLM Sleep Mode" (2025-10-03)
  reports waking a sleeping model in about 0.1-0.4 s instead of reloading it; in its
  two-model, six-prompt pipeline reloading took 188.9 s against 69.2 s with sleep mode.

Slurm queueing here is an idle single-node cluster (the job starts at once); on a busy
partition it is whatever the scheduler decides, which is why `queue_timeout` exists.
"""


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--burst", type=int, default=4, help="requests sent at once per cold start")
    a = p.parse_args()
    result = run(max(1, min(a.runs, 10)), max(1, min(a.burst, 8)))
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    (RESULTS / "cold_start.json").write_text(json.dumps(result, indent=2) + "\n")
    md = (
        "# Cold start of an on-demand model (first request to first token)\n\n"
        f"Measured {stamp} on {platform.machine()} (a shared 2-core "
        "machine, other work running), `python -m benchmarks.cold_start --runs "
        f"{len(result['runs'])} --burst {result['burst']}`: real single-node Slurm "
        "22.05 (Debian), `verbund site` with a slurm-launched llama.cpp (SmolLM2-135M, "
        "1 CPU), `verbund gateway`. Each run starts from `stopped` and sends "
        f"{result['burst']} streaming requests at once; TTFT is the first `data:` chunk "
        "(keep-alive comments excluded).\n\n"
        + table(result["runs"], result["burst"])
        + "\n"
        + VLLM_NOTE
    )
    (RESULTS / "cold_start.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
