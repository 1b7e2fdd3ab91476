"""Federations with job runners, training files and waiting for jobs, for the jobs tests."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx

from harness.training import kill_jobs
from tests.conftest import Gateway, federation_dict, with_agents
from verbund.config import FederationConfig, parse_config
from verbund.jobs import DataFormat, Recipe, Resources

HERE = Path(__file__).parent
SLOW = Recipe(
    name="test-slow",
    description="test: slow steps",
    script=HERE / "recipes" / "slow.py",
    data=DataFormat.any,
    resources=Resources(cpus=1, memory_mb=64, time_limit_minutes=5),
    base_models=("test-slow",),
    servable=True,
)
CRASH = Recipe(
    name="test-crash",
    description="test: fails",
    script=HERE / "recipes" / "crash.py",
    data=DataFormat.any,
    resources=Resources(cpus=1, memory_mb=64, time_limit_minutes=5),
    base_models=("test-crash",),
)

ENV = Recipe(
    name="test-env",
    description="test: lists its environment",
    script=HERE / "recipes" / "env.py",
    data=DataFormat.any,
    resources=Resources(cpus=1, memory_mb=64, time_limit_minutes=5),
)


def jobs_config(
    state_dir: Path, runner: dict[str, Any] | None = None, **overrides: Any
) -> FederationConfig:
    """The test federation (west sensitive, sued confidential, ost internal), each site
    with an agent and a runner there (local by default, 2 CPUs); ``overrides`` replace
    top-level sections."""
    data = federation_dict(state_dir)
    for site in data["sites"]:
        site["runner"] = {
            "kind": "local",
            "cpus": 2,
            "memory_mb": 4096,
            "workdir": str(state_dir / "jobs" / site["name"]),
            **(runner or {}),
        }
    data["training"] = {"poll_interval": 0.1}
    data.update(overrides)
    return parse_config(with_agents(data))


async def wait_job(
    gw: Gateway,
    job_id: str,
    statuses: tuple[str, ...],
    *,
    within: float = 60.0,
    path: str = "/v1/training/jobs",
    tick: bool = True,
) -> dict[str, Any]:
    """Advance the job loops (the agents' and the access point's: the apps run without
    background tasks) until a status."""
    deadline = time.monotonic() + within
    while True:
        if tick:
            await gw.tick()
        r = await gw.client.get(f"{path}/{job_id}", headers=gw.auth())
        job: dict[str, Any] = r.json()
        if job.get("status") in statuses:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job.get('status')} (wanted {statuses})")
        await asyncio.sleep(0.05)


async def create_training(gw: Gateway, institution: str = "uni-a", **body: Any) -> dict[str, Any]:
    """``POST /v1/training/jobs`` with ``body``; the job as created (HTTP 200 asserted)."""
    r = await gw.client.post("/v1/training/jobs", json=body, headers=gw.auth(institution))
    assert r.status_code == 200, r.text
    job: dict[str, Any] = r.json()
    return job


async def wait_training(gw: Gateway, job_id: str, within: float = 60.0) -> dict[str, Any]:
    """Until the recipe has reported its first step (it runs, not only its wrapper)."""
    deadline = time.monotonic() + within
    while True:
        job = await wait_job(gw, job_id, ("running",), within=within)
        if job["metrics"] is not None:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} reports no metrics")
        await asyncio.sleep(0.05)


async def events_of(gw: Gateway, job_id: str, institution: str = "uni-a") -> list[dict[str, Any]]:
    """All events, oldest first."""
    out: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        params = {"limit": "100", **({"after": after} if after else {})}
        r = await gw.client.get(
            f"/v1/training/jobs/{job_id}/events", params=params, headers=gw.auth(institution)
        )
        page = r.json()
        out += page["data"]
        if not page["has_more"]:
            return list(reversed(out))
        after = page["data"][-1]["id"]


def job_dir(cfg: FederationConfig, site: str, job_id: str) -> Path:
    runner = cfg.site(site).runner  # type: ignore[union-attr]
    assert runner is not None
    return Path(runner.workdir) / job_id


def kill_leftovers(cfg: FederationConfig) -> None:
    """Stop every job process still running in the test federation's work folders."""
    kill_jobs([Path(s.runner.workdir) for s in cfg.sites if s.runner and s.runner.workdir])


async def infer(
    client: httpx.AsyncClient, model: str, rows: list[list[float]], headers: dict[str, str]
) -> httpx.Response:
    body = {
        "inputs": [
            {
                "name": "input-0",
                "shape": [len(rows), len(rows[0])],
                "datatype": "FP64",
                "data": [v for r in rows for v in r],
            }
        ]
    }
    return await client.post(f"/v2/models/{model}/infer", json=body, headers=headers)


def digits() -> tuple[str, list[list[float]], list[int]]:
    """scikit-learn's digits (shipped inside the package): training CSV, held-out rows."""
    import pytest

    datasets = pytest.importorskip(
        "sklearn.datasets", reason="scikit-learn comes with the demo extra"
    )
    x, y = datasets.load_digits(return_X_y=True)
    header = ",".join(f"p{i}" for i in range(x.shape[1])) + ",label"
    lines = [header] + [
        ",".join(str(int(v)) for v in row) + f",{int(label)}"
        for row, label in zip(x[:1400], y[:1400], strict=True)
    ]
    return "\n".join(lines) + "\n", x[1400:].tolist(), [int(v) for v in y[1400:]]
