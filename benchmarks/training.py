"""Training jobs: time to running and to a served model, and ``ft:`` inference latency.

Runs one access point in-process (its job loop included) with a local runner, submits
``--jobs`` nearest-centroid jobs one after another on a small tabular data set, then
calls the resulting model through ``/v2/models/ft:.../infer``. With ``--slurm`` the same
jobs also run through a real single-node Slurm (started here; Debian's packages).

    .venv/bin/python -m benchmarks.training [--jobs 5] [--requests 300] [--slurm]

Prints a table and writes benchmarks/results/training.md.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.report import machine, publish
from harness.training import blobs_csv, put_file
from verbund.config import parse_config
from verbund.gateway import Services, create_app

ADMIN = "vbadmin-bench-0123456789abcdef"


def config(state: Path, runner: dict[str, Any]) -> dict[str, Any]:
    return {
        "gateway": {"name": "ap-bench", "home_site": "site", "state_dir": str(state)},
        "store": {"url": f"sqlite+aiosqlite:///{state / 'verbund.db'}"},
        "training": {"poll_interval": 0.1},
        "sites": [{"name": "site", "max_data_class": "sensitive", "runner": runner}],
        "institutions": [{"id": "uni-a"}],
    }


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(runner: dict[str, Any], jobs: int, requests: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="verbund-bench-") as tmp:
        state = Path(tmp)
        runner = {"cpus": 1, "memory_mb": 1000, "workdir": str(state / "jobs"), **runner}
        cfg = parse_config(config(state, runner))
        put_file(cfg, "uni-a", "file-blobs", blobs_csv(300))
        app = create_app(cfg, admin_key=ADMIN)
        svc: Services = app.state.services
        async with app.router.lifespan_context(app):
            key = (await svc.keys.create("uni-a", "bench", actor="bench")).key
            auth = {"authorization": f"Bearer {key}"}
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://ap") as c:
                to_running, to_model = [], []
                model = ""
                for i in range(jobs):
                    t0 = time.perf_counter()
                    r = await c.post(
                        "/v1/fine_tuning/jobs",
                        json={
                            "model": "centroid-classifier",
                            "training_file": "file-blobs",
                            "suffix": f"b{i}",
                            "hyperparameters": {"n_epochs": 3},
                        },
                        headers=auth,
                    )
                    job_id = r.json()["id"]
                    seen_running = False
                    while True:
                        job = (await c.get(f"/v1/fine_tuning/jobs/{job_id}", headers=auth)).json()
                        if job["status"] == "running" and not seen_running:
                            seen_running = True
                            to_running.append(time.perf_counter() - t0)
                        if job["status"] in ("succeeded", "failed", "cancelled"):
                            break
                        await asyncio.sleep(0.02)
                    assert job["status"] == "succeeded", job["error"]
                    if not seen_running:
                        to_running.append(time.perf_counter() - t0)
                    to_model.append(time.perf_counter() - t0)
                    model = job["fine_tuned_model"]
                latencies: dict[int, list[float]] = {1: [], 100: []}
                for rows in latencies:
                    body = {
                        "inputs": [
                            {
                                "name": "x",
                                "shape": [rows, 4],
                                "datatype": "FP64",
                                "data": [1.0, 0.0, 5.0, 5.0] * rows,
                            }
                        ]
                    }
                    for _ in range(requests):
                        t0 = time.perf_counter()
                        r = await c.post(f"/v2/models/{model}/infer", json=body, headers=auth)
                        assert r.status_code == 200, r.text
                        latencies[rows].append(time.perf_counter() - t0)
    return {
        "runner": runner["kind"],
        "jobs": jobs,
        "running_p50_s": statistics.median(to_running),
        "model_p50_s": statistics.median(to_model),
        "model_max_s": max(to_model),
        "infer1_p50_ms": pct(latencies[1], 0.5) * 1000,
        "infer1_p99_ms": pct(latencies[1], 0.99) * 1000,
        "infer100_p50_ms": pct(latencies[100], 0.5) * 1000,
        "infer100_p99_ms": pct(latencies[100], 0.99) * 1000,
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--jobs", type=int, default=5)
    p.add_argument("--requests", type=int, default=300)
    p.add_argument("--slurm", action="store_true")
    args = p.parse_args()
    rows = [asyncio.run(run({"kind": "local"}, args.jobs, args.requests))]
    if args.slurm:
        from harness.slurm import start_slurm

        cluster = start_slurm()
        try:
            slurm = {"kind": "slurm", "slurm_conf": str(cluster.conf)}
            rows.append(asyncio.run(run(slurm, args.jobs, args.requests)))
        finally:
            cluster.stop()
    cols = list(rows[0])
    table = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        table.append(
            "| "
            + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in r.values())
            + " |"
        )
    header = (
        f"{machine()}; {args.jobs} centroid-classifier jobs one after "
        f"another (poll interval 0.1 s), then {args.requests} OIP v2 requests each of 1 and "
        "100 rows to the ft: model, in-process (ASGI, no network)."
    )
    text = "\n".join(
        [
            "# Training jobs: latency to a served model, ft: inference",
            "",
            header,
            "",
            "Command: `.venv/bin/python -m benchmarks.training"
            + (" --slurm" if args.slurm else "")
            + "`",
            "",
            *table,
            "",
        ]
    )
    publish("training.md", text)


if __name__ == "__main__":
    main()
