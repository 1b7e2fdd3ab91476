"""The whole flow with the local runner: file, job, events, model, inference; failures."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from harness.training import blobs_csv, put_file
from tests.conftest import Gateway, GatewayFactory
from tests.jobs.helpers import (
    CRASH,
    ENV,
    SLOW,
    create_training,
    events_of,
    infer,
    job_dir,
    jobs_config,
    kill_leftovers,
    wait_job,
    wait_training,
)
from verbund.config import FederationConfig


@pytest.fixture
def cfg(tmp_path: Path) -> FederationConfig:
    return jobs_config(tmp_path)


@pytest.fixture
async def jgw(gateway_factory: GatewayFactory, cfg: FederationConfig) -> AsyncIterator[Gateway]:
    put_file(cfg, "uni-a", "file-blobs", blobs_csv())
    try:
        async with gateway_factory(cfg) as g:
            g.services.jobs.recipes.register(SLOW)
            g.services.jobs.recipes.register(CRASH)
            g.services.jobs.recipes.register(ENV)
            yield g
    finally:
        kill_leftovers(cfg)


def process_gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in "ZX"
    except OSError:
        return True


async def create(gw: Gateway, institution: str = "uni-a", **body: Any) -> dict[str, Any]:
    body = {"recipe": "centroid-classifier", "training_file": "file-blobs", **body}
    return await create_training(gw, institution, **body)


async def test_fine_tune_to_inference(jgw: Gateway) -> None:
    r = await jgw.client.post(
        "/v1/fine_tuning/jobs",
        json={
            "model": "centroid-classifier",
            "training_file": "file-blobs",
            "suffix": "blobs",
            "hyperparameters": {"n_epochs": 3},
        },
        headers=jgw.auth(),
    )
    assert r.status_code == 200, r.text
    job = r.json()
    assert job["object"] == "fine_tuning.job" and job["id"].startswith("ftjob-")
    assert job["status"] == "validating_files" and job["fine_tuned_model"] is None
    assert job["organization_id"] == "uni-a" and job["training_file"] == "file-blobs"

    done = await wait_job(jgw, job["id"], ("succeeded", "failed"), path="/v1/fine_tuning/jobs")
    assert done["status"] == "succeeded", done["error"]
    assert done["fine_tuned_model"] == "ft:centroid-classifier:uni-a:blobs"
    assert done["hyperparameters"]["n_epochs"] == 3
    assert done["finished_at"] >= done["created_at"]
    assert done["verbund"]["site"] == "west"  # home site first when equally loaded

    r = await jgw.client.get(f"/v1/fine_tuning/jobs/{job['id']}/events", headers=jgw.auth())
    page = r.json()
    assert page["object"] == "list" and page["data"][0]["object"] == "fine_tuning.job.event"
    events = await events_of(jgw, job["id"])
    messages = [e["message"] for e in events]
    assert messages[0].startswith("Created fine-tune job")
    assert "Files validated, moving job to queued state" in messages
    metrics = [e for e in events if e["type"] == "metrics"]
    assert [m["data"]["step"] for m in metrics] == [1, 2, 3]
    assert all("valid_accuracy" in m["data"] for m in metrics)
    assert messages[-1] == "The job has successfully completed"

    models = (await jgw.client.get("/v1/models", headers=jgw.auth())).json()["data"]
    assert "ft:centroid-classifier:uni-a:blobs" in [m["id"] for m in models]
    others = (await jgw.client.get("/v1/models", headers=jgw.auth("uni-b"))).json()["data"]
    assert "ft:centroid-classifier:uni-a:blobs" not in [m["id"] for m in others]

    rows = [[0.1, -0.2, 5.1, 4.9], [8.2, 0.1, 0.3, 2.8], [0.0, 9.1, 2.2, 0.1]]
    r = await infer(jgw.client, "ft:centroid-classifier:uni-a:blobs", rows, jgw.auth())
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["model_name"] == "ft:centroid-classifier:uni-a:blobs"
    assert out["outputs"][0] == {
        "name": "predict",
        "shape": [3],
        "datatype": "INT64",
        "data": [0, 1, 2],
    }
    r = await infer(jgw.client, "ft:centroid-classifier:uni-a:blobs", rows, jgw.auth("uni-b"))
    assert r.status_code == 404
    meta = await jgw.client.get("/v2/models/ft:centroid-classifier:uni-a:blobs", headers=jgw.auth())
    assert meta.json()["inputs"][0]["shape"] == [-1, 4]
    ready = await jgw.client.get(
        "/v2/models/ft:centroid-classifier:uni-a:blobs/ready", headers=jgw.auth()
    )
    assert ready.json()["ready"] is True

    usage = await jgw.client.get(
        "/admin/usage", params={"group_by": "institution,site,endpoint"}, headers=jgw.admin()
    )
    rows_u = {r["site"]: r for r in usage.json()["data"] if r["endpoint"] == "/v1/fine_tuning/jobs"}
    # the request that created the job (at the access point), and the job's run at west
    assert sorted(rows_u) == ["", "west"]
    assert rows_u[""]["requests"] == 1 and rows_u[""]["cpu_seconds"] == 0
    run = rows_u["west"]
    assert run["institution"] == "uni-a" and run["cpu_seconds"] > 0 and run["gpu_seconds"] == 0


async def test_a_failing_recipe_fails_the_job_with_its_reason(jgw: Gateway) -> None:
    job = await create(jgw, recipe="test-crash")
    done = await wait_job(jgw, job["id"], ("succeeded", "failed"))
    assert done["status"] == "failed"
    assert done["error"]["code"] == "job_failed"
    assert done["error"]["message"] == "RuntimeError: loss is NaN at step 2"
    assert done["result_model"] is None
    events = await events_of(jgw, job["id"])
    assert any(e["type"] == "metrics" for e in events)
    assert events[-1]["level"] == "error"


async def test_cancel_a_running_job(jgw: Gateway, cfg: FederationConfig) -> None:
    job = await create(jgw, recipe="test-slow", params={"steps": 400, "delay": 0.05})
    running = await wait_training(jgw, job["id"])
    pid = int((job_dir(cfg, running["site"], job["id"]) / "recipe.pid").read_text())
    r = await jgw.client.post(f"/v1/training/jobs/{job['id']}/cancel", headers=jgw.auth())
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    # the runner confirms: process gone, usage accounted, the job stays cancelled
    for _ in range(400):
        await jgw.tick()
        row = await jgw.services.jobs.get(job["id"], None)
        if row.runner_done:
            break
        await asyncio.sleep(0.05)
    assert row.runner_done and row.status == "cancelled"
    assert process_gone(pid)
    again = await jgw.client.post(f"/v1/training/jobs/{job['id']}/cancel", headers=jgw.auth())
    assert again.status_code == 200 and again.json()["status"] == "cancelled"


async def test_cancelling_a_finished_job_is_refused(jgw: Gateway) -> None:
    job = await create(jgw)
    await wait_job(jgw, job["id"], ("succeeded",))
    r = await jgw.client.post(f"/v1/training/jobs/{job['id']}/cancel", headers=jgw.auth())
    assert r.status_code == 400 and r.json()["error"]["code"] == "job_not_cancellable"


async def test_a_job_killed_at_the_site_fails_with_the_reason(
    jgw: Gateway, cfg: FederationConfig
) -> None:
    job = await create(jgw, recipe="test-slow", params={"steps": 400, "delay": 0.05})
    running = await wait_training(jgw, job["id"])
    folder = job_dir(cfg, running["site"], job["id"])
    os.kill(int((folder / "recipe.pid").read_text()), signal.SIGKILL)  # e.g. the OOM killer
    done = await wait_job(jgw, job["id"], ("failed", "succeeded"))
    assert done["status"] == "failed"
    assert done["error"]["message"] == "killed by signal SIGKILL"


async def test_a_job_whose_whole_process_vanished_fails(
    jgw: Gateway, cfg: FederationConfig
) -> None:
    job = await create(jgw, recipe="test-slow", params={"steps": 400, "delay": 0.05})
    running = await wait_training(jgw, job["id"])
    kill_leftovers(cfg)  # the node lost the job: no result.json is written
    done = await wait_job(jgw, job["id"], ("failed", "succeeded"))
    assert done["status"] == "failed"
    assert "ended without a result" in done["error"]["message"]
    assert running["site"] in ("west", "sued", "ost")


async def test_bad_training_file_fails_validation(jgw: Gateway, cfg: FederationConfig) -> None:
    put_file(cfg, "uni-a", "file-bad", "a,b,label\n1,x,0\n2,3,1\n")
    job = await create(jgw, training_file="file-bad")
    done = await wait_job(jgw, job["id"], ("failed", "queued", "running", "succeeded"))
    assert done["status"] == "failed"
    assert done["error"] == {
        "code": "invalid_file",
        "message": "file-bad: row 2: a feature is not a number",
        "param": "training_file",
    }
    assert done["site"] == "west" and done["runner"] is None  # checked at its site, never run


async def test_requests_are_checked_before_anything_runs(jgw: Gateway) -> None:
    cases: list[tuple[str, dict[str, Any], int, str | None]] = [
        ("/v1/fine_tuning/jobs", {"model": "gpt-4o", "training_file": "file-blobs"}, 400, "model"),
        ("/v1/fine_tuning/jobs", {"model": "centroid-classifier"}, 400, "training_file"),
        (
            "/v1/fine_tuning/jobs",
            {"model": "centroid-classifier", "training_file": "file-nope"},
            400,
            "training_file",
        ),
        (
            "/v1/fine_tuning/jobs",
            {
                "model": "centroid-classifier",
                "training_file": "file-blobs",
                "hyperparameters": {"n_epochs": 0},
            },
            400,
            "hyperparameters.n_epochs",
        ),
        (
            "/v1/fine_tuning/jobs",
            {"model": "centroid-classifier", "training_file": "file-blobs", "suffix": "a/b"},
            400,
            "suffix",
        ),
        ("/v1/training/jobs", {"recipe": "nope", "training_file": "file-blobs"}, 400, "recipe"),
        (
            "/v1/training/jobs",
            {
                "recipe": "centroid-classifier",
                "training_file": "file-blobs",
                "resources": {"gpus": 1},
            },
            400,
            "resources",
        ),
    ]
    for path, body, status, param in cases:
        r = await jgw.client.post(path, json=body, headers=jgw.auth())
        assert r.status_code == status, (body, r.text)
        err = r.json()["error"]
        assert err["param"] == param, (body, err)
    r = await jgw.client.post(
        "/v1/training/jobs",
        json={"recipe": "centroid-classifier", "training_file": "file-blobs"},
        headers=jgw.admin(),
    )
    assert r.status_code == 403
    assert (await jgw.client.get("/admin/jobs")).status_code == 401
    jobs = await jgw.services.jobs.list_jobs(None)
    assert jobs == ([], False)


async def test_suffix_names_one_model(jgw: Gateway) -> None:
    await create(jgw, suffix="same")
    r = await jgw.client.post(
        "/v1/training/jobs",
        json={"recipe": "centroid-classifier", "training_file": "file-blobs", "suffix": "same"},
        headers=jgw.auth(),
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "suffix_in_use"


async def test_tenants_see_only_their_jobs(jgw: Gateway, cfg: FederationConfig) -> None:
    job = await create(jgw)
    for path in (f"/v1/training/jobs/{job['id']}", f"/v1/training/jobs/{job['id']}/events"):
        assert (await jgw.client.get(path, headers=jgw.auth("uni-b"))).status_code == 404
    r = await jgw.client.post(f"/v1/training/jobs/{job['id']}/cancel", headers=jgw.auth("uni-b"))
    assert r.status_code == 404
    assert (await jgw.client.get("/v1/training/jobs", headers=jgw.auth("uni-b"))).json()[
        "data"
    ] == []
    # a training job is not a fine-tuning job
    r = await jgw.client.get(f"/v1/fine_tuning/jobs/{job['id']}", headers=jgw.auth())
    assert r.status_code == 404
    # uni-b cannot use uni-a's file either
    r = await jgw.client.post(
        "/v1/training/jobs",
        json={"recipe": "centroid-classifier", "training_file": "file-blobs"},
        headers=jgw.auth("uni-b"),
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "training_file"
    admin = await jgw.client.get("/admin/jobs", headers=jgw.admin())
    assert [j["id"] for j in admin.json()["data"]] == [job["id"]]


async def test_listing_pages_newest_first(jgw: Gateway) -> None:
    ids = [(await create(jgw, suffix=f"s{i}"))["id"] for i in range(3)]
    r = await jgw.client.get("/v1/training/jobs", params={"limit": 2}, headers=jgw.auth())
    first = r.json()
    assert [j["id"] for j in first["data"]] == ids[::-1][:2] and first["has_more"]
    r = await jgw.client.get(
        "/v1/training/jobs", params={"limit": 2, "after": ids[1]}, headers=jgw.auth()
    )
    assert [j["id"] for j in r.json()["data"]] == [ids[0]] and not r.json()["has_more"]
    bad = await jgw.client.get("/v1/training/jobs", params={"limit": 0}, headers=jgw.auth())
    assert bad.status_code == 400


async def test_jobs_do_not_see_the_access_points_secrets(
    jgw: Gateway, cfg: FederationConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VERBUND_ADMIN_KEY", "vbadmin-secret")
    monkeypatch.setenv("WEST_VLLM_KEY", "backend-secret")
    job = await create(jgw, recipe="test-env")
    done = await wait_job(jgw, job["id"], ("succeeded", "failed"))
    assert done["status"] == "succeeded", done["error"]
    seen = json.loads((job_dir(cfg, done["site"], job["id"]) / "output" / "env.json").read_text())
    assert "PATH" in seen and "OMP_NUM_THREADS" in seen
    assert "VERBUND_ADMIN_KEY" not in seen and "WEST_VLLM_KEY" not in seen
