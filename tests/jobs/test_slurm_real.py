"""The Slurm runner of a site agent against a real single-node Slurm (Debian's packages,
started here): jobs placed by the access point, run by the agent's runner."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from harness import federation as fed
from harness.gateway import GatewayProcess
from harness.polling import poll
from harness.ports import free_port
from harness.slurm import SlurmCluster, start_slurm
from harness.training import SiteAgents, blobs_csv, put_file
from tests.conftest import Gateway, GatewayFactory
from tests.jobs.helpers import (
    CRASH,
    ENV,
    SLOW,
    create_training,
    digits,
    events_of,
    infer,
    job_dir,
    jobs_config,
    wait_job,
    wait_training,
)
from verbund.config import FederationConfig
from verbund.store import TrainingJobRow

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def slurm() -> Iterator[SlurmCluster]:
    cluster = start_slurm()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def cfg(tmp_path: Path, slurm: SlurmCluster) -> FederationConfig:
    return jobs_config(
        tmp_path,
        runner={"kind": "slurm", "cpus": 1, "memory_mb": 2000, "slurm_conf": str(slurm.conf)},
    )


@pytest.fixture
async def sgw(gateway_factory: GatewayFactory, cfg: FederationConfig) -> AsyncIterator[Gateway]:
    async with gateway_factory(cfg) as g:
        g.services.jobs.recipes.register(SLOW)
        g.services.jobs.recipes.register(CRASH)
        g.services.jobs.recipes.register(ENV)
        yield g


async def site_row(gw: Gateway, job_id: str, site: str = "west") -> TrainingJobRow:
    """The job as its site's agent keeps it (with the Slurm job id)."""
    return await gw.agents[site].jobs.get(job_id)


def slurm_job(gw: Gateway, row: TrainingJobRow, slurm: SlurmCluster) -> dict[str, str]:
    from verbund.jobs import parse_scontrol

    out = slurm.run("scontrol", "show", "job", "-o", row.runner_job_id or "")
    return parse_scontrol(out.stdout)


async def test_fine_tune_digits_on_slurm_and_serve_it(
    sgw: Gateway, cfg: FederationConfig, slurm: SlurmCluster
) -> None:
    train, held_x, held_y = digits()
    put_file(cfg, "uni-a", "file-digits", train)
    r = await sgw.client.post(
        "/v1/fine_tuning/jobs",
        json={
            "model": "sklearn-classifier",
            "training_file": "file-digits",
            "suffix": "digits",
            "hyperparameters": {"n_epochs": 5},
        },
        headers=sgw.auth(),
    )
    assert r.status_code == 200, r.text
    job = r.json()
    done = await wait_job(
        sgw, job["id"], ("succeeded", "failed"), path="/v1/fine_tuning/jobs", within=180
    )
    assert done["status"] == "succeeded", done["error"]
    assert done["verbund"]["runner"] == "slurm"
    row = await site_row(sgw, job["id"])
    # the wrapper's result.json can be read a moment before Slurm calls the job COMPLETED
    for _ in range(100):
        if slurm_job(sgw, row, slurm)["JobState"] == "COMPLETED":
            break
        await asyncio.sleep(0.1)
    assert slurm_job(sgw, row, slurm)["JobState"] == "COMPLETED"
    events = await events_of(sgw, job["id"])
    metrics = [e["data"] for e in events if e["type"] == "metrics"]
    assert [m["step"] for m in metrics] == [1, 2, 3, 4, 5]
    assert metrics[-1]["valid_accuracy"] > 0.9
    assert any(e["message"].startswith("Job placed at site west (slurm runner") for e in events)

    r = await infer(sgw.client, "ft:sklearn-classifier:uni-a:digits", held_x, sgw.auth())
    assert r.status_code == 200, r.text
    predicted = r.json()["outputs"][0]["data"]
    accuracy = sum(p == t for p, t in zip(predicted, held_y, strict=True)) / len(held_y)
    assert accuracy > 0.85, accuracy
    usage = await sgw.client.get(
        "/admin/usage", params={"group_by": "institution,site,endpoint"}, headers=sgw.admin()
    )
    rows = [u for u in usage.json()["data"] if u["endpoint"] == "/v1/fine_tuning/jobs"]
    run = [u for u in rows if u["site"] == "west"]  # not the request that created the job
    assert run and run[0]["cpu_seconds"] > 0


async def test_cancel_on_slurm(sgw: Gateway, cfg: FederationConfig, slurm: SlurmCluster) -> None:
    put_file(cfg, "uni-a", "file-any", "x\n")
    job = await create_training(
        sgw, recipe="test-slow", training_file="file-any", params={"steps": 600, "delay": 0.05}
    )
    await wait_training(sgw, job["id"], within=120)
    r = await sgw.client.post(f"/v1/training/jobs/{job['id']}/cancel", headers=sgw.auth())
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    row = await sgw.services.jobs.get(job["id"], None)
    for _ in range(600):
        await sgw.tick()
        row = await sgw.services.jobs.get(job["id"], None)
        if row.runner_done:
            break
        await asyncio.sleep(0.1)
    assert row.runner_done and row.status == "cancelled"
    row = await site_row(sgw, job["id"])
    for _ in range(100):
        if slurm_job(sgw, row, slurm)["JobState"] == "CANCELLED":
            break
        await asyncio.sleep(0.1)
    assert slurm_job(sgw, row, slurm)["JobState"] == "CANCELLED"
    assert (job_dir(cfg, "west", job["id"]) / "result.json").exists()


async def test_a_failing_job_on_slurm(sgw: Gateway, cfg: FederationConfig) -> None:
    put_file(cfg, "uni-a", "file-any", "x\n")
    job = await create_training(sgw, recipe="test-crash", training_file="file-any")
    done = await wait_job(sgw, job["id"], ("failed", "succeeded"), within=120)
    assert done["status"] == "failed"
    assert done["error"]["message"] == "RuntimeError: loss is NaN at step 2"


async def test_scancel_by_the_operator_fails_the_job(
    sgw: Gateway, cfg: FederationConfig, slurm: SlurmCluster
) -> None:
    put_file(cfg, "uni-a", "file-any", "x\n")
    job = await create_training(
        sgw, recipe="test-slow", training_file="file-any", params={"steps": 600, "delay": 0.05}
    )
    await wait_training(sgw, job["id"], within=120)
    row = await site_row(sgw, job["id"])
    assert slurm.run("scancel", row.runner_job_id or "").returncode == 0
    done = await wait_job(sgw, job["id"], ("failed", "succeeded", "cancelled"), within=120)
    assert done["status"] == "failed"
    assert done["error"]["message"] == "cancelled at the site (scancel by the operator)"


async def test_a_restart_finds_slurm_jobs_again(
    gateway_factory: GatewayFactory, cfg: FederationConfig
) -> None:
    put_file(cfg, "uni-a", "file-any", "x\n")
    async with gateway_factory(cfg) as gw:
        gw.services.jobs.recipes.register(SLOW)
        job = await create_training(
            gw, recipe="test-slow", training_file="file-any", params={"steps": 30, "delay": 0.05}
        )
        await wait_training(gw, job["id"], within=120)
        row = await site_row(gw, job["id"])
        assert row.runner_job_id is not None
    async with gateway_factory(cfg) as gw:
        gw.services.jobs.recipes.register(SLOW)
        done = await wait_job(gw, job["id"], ("succeeded", "failed"), within=120)
        assert done["status"] == "succeeded" and done["metrics"]["step"] == 30


async def test_slurm_jobs_do_not_see_the_access_points_secrets(
    sgw: Gateway, cfg: FederationConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VERBUND_ADMIN_KEY", "vbadmin-secret")
    put_file(cfg, "uni-a", "file-any", "x\n")
    job = await create_training(sgw, recipe="test-env", training_file="file-any")
    done = await wait_job(sgw, job["id"], ("succeeded", "failed"), within=120)
    assert done["status"] == "succeeded", done["error"]
    seen = json.loads((job_dir(cfg, "west", job["id"]) / "output" / "env.json").read_text())
    assert "PATH" in seen and any(k.startswith("SLURM_") for k in seen)
    assert "VERBUND_ADMIN_KEY" not in seen


def test_a_slurm_site_agent_process_trains_and_serves(slurm: SlurmCluster, tmp_path: Path) -> None:
    """`verbund site` on the cluster's login node, `verbund gateway` elsewhere: the job goes
    through the agent's Slurm runner; its model is served at the site."""
    runner = {"kind": "slurm", "cpus": 1, "memory_mb": 2000, "slurm_conf": str(slurm.conf)}
    cfg = fed.federation(
        "ap-hpc",
        tmp_path / "ap" / "state",
        [fed.site("hpc", "BY", max_data_class="confidential", runner=runner)],
        port=free_port(),
        gateway={"home_site": "hpc"},
        training={"poll_interval": 0.2},
        institutions=[fed.institution("uni-a", home_region="BY")],
    )
    agents = SiteAgents(tmp_path / "agents")
    ap = GatewayProcess(cfg, tmp_path / "ap", env=agents.attach(cfg))
    try:
        agents.start()
        ap.start(path="/healthz")
        key = ap.create_key("uni-a")["key"]
        with httpx.Client(
            base_url=ap.url, headers={"authorization": f"Bearer {key}"}, trust_env=False, timeout=60
        ) as c:
            up = c.post(
                "/v1/files",
                data={"purpose": "fine-tune"},
                files={"file": ("blobs.csv", blobs_csv().encode(), "text/csv")},
            )
            r = c.post(
                "/v1/fine_tuning/jobs",
                json={"model": "centroid-classifier", "training_file": up.json()["id"]},
            )
            assert r.status_code == 200, r.text
            job_id = r.json()["id"]
            poll(
                lambda: (
                    c.get(f"/v1/fine_tuning/jobs/{job_id}").json()["status"]
                    in ("succeeded", "failed")
                ),
                "the Slurm job",
                180,
                every=0.5,
            )
            done = c.get(f"/v1/fine_tuning/jobs/{job_id}").json()
            assert done["status"] == "succeeded", done["error"]
            assert done["verbund"]["site"] == "hpc" and done["verbund"]["runner"] == "slurm"
            body = {
                "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [8, 0, 0, 3]}]
            }
            served = c.post(f"/v2/models/{done['fine_tuned_model']}/infer", json=body)
            assert served.status_code == 200, served.text
            assert served.json()["outputs"][0]["data"] == [1]
        assert (tmp_path / "agents" / "site-hpc" / "models" / job_id / "model.json").exists()
    finally:
        ap.stop()
        agents.stop()
