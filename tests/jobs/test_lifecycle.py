"""Restarts, drained sites and data classes, with the local runner."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from harness.training import blobs_csv, put_file
from tests.conftest import Gateway, GatewayFactory
from tests.jobs.helpers import (
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
from verbund.config import FederationConfig, SiteState
from verbund.store import TrainingJobRow


@pytest.fixture
def cfg(tmp_path: Path) -> FederationConfig:
    c = jobs_config(tmp_path)
    put_file(c, "uni-a", "file-blobs", blobs_csv())
    return c


@pytest.fixture(autouse=True)
def _no_leftovers(cfg: FederationConfig) -> Any:
    yield
    kill_leftovers(cfg)


async def create(gw: Gateway, institution: str = "uni-a", **body: Any) -> dict[str, Any]:
    body = {"recipe": "test-slow", "training_file": "file-blobs", **body}
    return await create_training(gw, institution, **body)


async def wait_file(path: Path, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while not await asyncio.to_thread(path.exists):
        assert time.monotonic() < deadline, f"{path} never appeared"
        await asyncio.sleep(0.05)


async def test_a_restart_reconciles_running_and_finished_jobs(
    gateway_factory: GatewayFactory, cfg: FederationConfig
) -> None:
    async with gateway_factory(cfg) as gw:
        gw.services.jobs.recipes.register(SLOW)
        running = await create(gw, params={"steps": 40, "delay": 0.05}, suffix="long")
        running = await wait_training(gw, running["id"])
        done_while_down = await create(gw, params={"steps": 2, "delay": 0.01}, suffix="short")
        done_while_down = await wait_job(gw, done_while_down["id"], ("running", "succeeded"))
    # the access point is gone; its jobs are not
    await wait_file(job_dir(cfg, done_while_down["site"], done_while_down["id"]) / "result.json")
    async with gateway_factory(cfg) as gw:
        gw.services.jobs.recipes.register(SLOW)
        short = await wait_job(gw, done_while_down["id"], ("succeeded", "failed"))
        assert short["status"] == "succeeded"
        long = await wait_job(gw, running["id"], ("succeeded", "failed"))
        assert long["status"] == "succeeded" and long["metrics"]["step"] == 40
        steps = [
            e["data"]["step"] for e in await events_of(gw, running["id"]) if e["type"] == "metrics"
        ]
        assert steps == list(range(1, 41))  # no event lost or repeated across the restart
    async with gateway_factory(cfg) as gw:  # the registry is rebuilt from the store
        r = await infer(gw.client, "ft:test-slow:uni-a:long", [[2.0, 0.0]], gw.auth())
        assert r.json()["outputs"][0]["data"] == ["right"]


async def test_a_job_submitted_just_before_a_crash_is_found_again(
    gateway_factory: GatewayFactory, cfg: FederationConfig
) -> None:
    async with gateway_factory(cfg) as gw:
        gw.services.jobs.recipes.register(SLOW)
        job = await create(gw, params={"steps": 30, "delay": 0.05})
        started = await wait_training(gw, job["id"])
        # as if the agent died between starting the job and storing its runner's id...
        async with gw.agents[started["site"]].store.session() as s, s.begin():
            await s.execute(
                update(TrainingJobRow)
                .where(TrainingJobRow.id == job["id"])
                .values(runner_job_id=None, status="queued")
            )
        # ...and the access point between handing it over and noting so
        async with gw.services.store.session() as s, s.begin():
            await s.execute(
                update(TrainingJobRow)
                .where(TrainingJobRow.id == job["id"])
                .values(runner_job_id=None)
            )
        done = await wait_job(gw, job["id"], ("succeeded", "failed"))
        assert done["status"] == "succeeded"
        messages = [e["message"] for e in await events_of(gw, job["id"])]
        assert any("found again" in m for m in messages)
        assert sum(m.startswith("Job placed at site") for m in messages) == 1  # not run twice
        assert sum(m.startswith("Job accepted at site") for m in messages) == 1


async def test_a_draining_site_keeps_its_jobs_and_gets_no_new_ones(
    gateway_factory: GatewayFactory, cfg: FederationConfig
) -> None:
    async with gateway_factory(cfg) as gw:
        gw.services.jobs.recipes.register(SLOW)
        first = await wait_training(
            gw, (await create(gw, params={"steps": 30, "delay": 0.05}))["id"]
        )
        assert first["site"] == "west"
        r = await gw.client.post("/admin/sites/west/drain", headers=gw.admin())
        assert r.status_code == 200
        second = await wait_job(gw, (await create(gw))["id"], ("running", "succeeded"))
        assert second["site"] != "west"
        done = await wait_job(gw, first["id"], ("succeeded", "failed"))
        assert done["status"] == "succeeded" and done["site"] == "west"


async def test_sensitive_data_waits_for_the_only_site_that_may_hold_it(
    gateway_factory: GatewayFactory, cfg: FederationConfig
) -> None:
    put_file(cfg, "uni-a", "file-patients", blobs_csv(), data_class="sensitive")
    async with gateway_factory(cfg) as gw:
        gw.services.jobs.recipes.register(SLOW)
        await gw.services.lifecycle.set_state("west", SiteState.maintenance, "test")
        job = await create(gw, training_file="file-patients")
        assert job["data_class"] == "sensitive"
        for _ in range(5):
            await gw.tick()
        waiting = await wait_job(gw, job["id"], ("queued",))
        assert waiting["site"] is None  # not sued (confidential), not ost (internal)
        messages = [e["message"] for e in await events_of(gw, job["id"])]
        assert "Waiting for a site: west: site is in state maintenance" in messages
        await gw.services.lifecycle.set_state("west", SiteState.active, "test")
        done = await wait_job(gw, job["id"], ("succeeded", "failed"))
        assert done["site"] == "west" and done["status"] == "succeeded"


async def test_the_header_and_the_institution_policy_bind_placement(
    gateway_factory: GatewayFactory, cfg: FederationConfig
) -> None:
    put_file(cfg, "uni-b", "file-b", blobs_csv())
    put_file(cfg, "uni-b", "file-b-sensitive", blobs_csv(), data_class="sensitive")
    async with gateway_factory(cfg) as gw:
        gw.services.jobs.recipes.register(SLOW)
        # uni-b may only use region BY (site sued, up to confidential)
        job = await create(gw, "uni-b", training_file="file-b")
        r = await gw.client.get(f"/v1/training/jobs/{job['id']}", headers=gw.auth("uni-b"))
        assert r.status_code == 200
        for _ in range(20):
            await gw.tick()
            r = await gw.client.get(f"/v1/training/jobs/{job['id']}", headers=gw.auth("uni-b"))
            if r.json()["site"]:
                break
        assert r.json()["site"] == "sued"
        r = await gw.client.post(
            "/v1/training/jobs",
            json={"recipe": "test-slow", "training_file": "file-b-sensitive"},
            headers=gw.auth("uni-b"),
        )
        assert r.status_code == 403 and r.json()["error"]["code"] == "policy_violation"
        assert "sued: data class sensitive exceeds" in r.json()["error"]["message"]
        r = await gw.client.post(
            "/v1/training/jobs",
            json={"recipe": "test-slow", "training_file": "file-b"},
            headers={**gw.auth("uni-b"), "X-Verbund-Data-Class": "sensitive"},
        )
        assert r.status_code == 403


async def test_local_sites_run_no_more_than_their_cpus(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    cfg = jobs_config(tmp_path, runner={"cpus": 1})
    put_file(cfg, "uni-a", "file-blobs", blobs_csv())
    try:
        async with gateway_factory(cfg) as gw:
            gw.services.jobs.recipes.register(SLOW)
            jobs = [await create(gw, params={"steps": 40, "delay": 0.05}) for _ in range(4)]
            await gw.tick()
            await gw.tick()
            rows = [await gw.services.jobs.get(j["id"], None) for j in jobs]
            placed = [r.site for r in rows if r.site]
            assert sorted(placed) == ["ost", "sued", "west"]  # one per 1-CPU site
            assert [r.site for r in rows].count(None) == 1
            r = await gw.client.post(f"/v1/training/jobs/{jobs[0]['id']}/cancel", headers=gw.auth())
            assert r.status_code == 200
            last = await wait_job(gw, jobs[3]["id"], ("running",))
            assert last["site"] == rows[0].site  # the freed CPU
    finally:
        kill_leftovers(cfg)


async def test_an_agent_away_shows_the_last_state_and_gets_the_cancel_later(
    gateway_factory: GatewayFactory, cfg: FederationConfig
) -> None:
    async with gateway_factory(cfg) as gw:
        gw.services.jobs.recipes.register(SLOW)
        job = await create(gw, params={"steps": 400, "delay": 0.05})
        site = (await wait_training(gw, job["id"]))["site"]
        gw.links[site].down = True  # the agent's host is cut off; the job runs on there
        await gw.services.jobs.tick()
        away = (await gw.client.get(f"/v1/training/jobs/{job['id']}", headers=gw.auth())).json()
        assert away["status"] == "running" and away["metrics"] is not None
        assert away["note"] and f"site {site} has not answered" in away["note"]
        r = await gw.client.post(f"/v1/training/jobs/{job['id']}/cancel", headers=gw.auth())
        assert r.status_code == 200 and r.json()["status"] == "cancelled"
        assert (await gw.agents[site].jobs.get(job["id"])).status == "running"  # not heard yet
        gw.links[site].down = False
        for _ in range(400):
            await gw.tick()
            row = await gw.services.jobs.get(job["id"], None)
            if row.runner_done:
                break
            await asyncio.sleep(0.05)
        assert row.runner_done and row.status == "cancelled"
        assert (await gw.agents[site].jobs.get(job["id"])).status == "cancelled"
        back = (await gw.client.get(f"/v1/training/jobs/{job['id']}", headers=gw.auth())).json()
        assert back["note"] is None
        messages = [e["message"] for e in await events_of(gw, job["id"])]
        assert any("the site did not answer" in m for m in messages)
