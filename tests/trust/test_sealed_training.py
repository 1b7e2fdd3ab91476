"""Training files in a sealed file store: a job trains on a Files-API file whose bytes lie
encrypted at the access point; they reach the site's agent decrypted through the staging
stream, and nowhere on the access point's disk are they readable."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from harness.gateway import GatewayProcess
from harness.training import blobs_csv
from tests.conftest import GatewayFactory
from tests.jobs.helpers import create_training, events_of, jobs_config, kill_leftovers
from tests.jobs.helpers import wait_job as wait_for
from tests.jobs.test_agents_real import Federation, holding, upload, wait_job
from verbund.config import FederationConfig

KEY = bytes(range(32))
CANARY = "canary-sealed-training-7e31"


@pytest.fixture
def cfg(tmp_path: Path) -> FederationConfig:
    return jobs_config(tmp_path / "ap")


@pytest.fixture(autouse=True)
def _no_leftovers(cfg: FederationConfig) -> Any:
    yield
    kill_leftovers(cfg)


async def test_a_job_trains_on_a_sealed_file(
    gateway_factory: GatewayFactory,
    cfg: FederationConfig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VERBUND_FILE_KEY", base64.b64encode(KEY).decode())
    text = blobs_csv().replace("f3", CANARY, 1)
    async with gateway_factory(cfg) as gw:
        r = await gw.client.post(
            "/v1/files",
            data={"purpose": "fine-tune"},
            files={"file": ("data.csv", text.encode(), "text/csv")},
            headers={**gw.auth(), "X-Verbund-Data-Class": "internal"},
        )
        assert r.status_code == 200, r.text
        file_id = r.json()["id"]
        f = await gw.services.files.get("uni-a", file_id)
        assert f.site is None  # held by the access point, sealed
        job = await create_training(
            gw, recipe="centroid-classifier", training_file=file_id, suffix="sealed"
        )
        done = await wait_for(gw, job["id"], ("succeeded", "failed"))
        assert done["status"] == "succeeded", done
        metrics = [e for e in await events_of(gw, job["id"]) if e["type"] == "metrics"]
        assert metrics  # the recipe read the table: in clear at the site
        model = done["result_model"]
        assert model == "ft:centroid-classifier:uni-a:sealed"
        # its inference is served by the site's agent, which signs no receipt for it:
        # a request that needs one fails closed
        rows = [[8.0, 0.0, 0.0, 3.0]]
        body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": rows}]}
        path = f"/v2/models/{model}/infer"
        asked = {**gw.auth(), "x-verbund-receipt": "required"}
        refused = await gw.client.post(path, json=body, headers=asked)
        assert refused.status_code == 503, refused.text
        assert "receipt" in refused.text
        assert (await gw.client.post(path, json=body, headers=gw.auth())).status_code == 200
    sealed = [p for p in (tmp_path / "ap" / "files").rglob("*") if p.is_file()]
    assert sealed  # the file is on the access point's disk, sealed
    assert holding(tmp_path / "ap" / "files", CANARY.encode()) == []
    for folder in tmp_path.rglob("*"):  # and its clear bytes were never written there
        if folder.is_file() and "site-" not in str(folder) and "jobs" not in folder.parts:
            assert CANARY.encode() not in folder.read_bytes(), folder


async def test_a_sealed_file_that_is_not_a_table_is_refused_before_it_is_queued(
    gateway_factory: GatewayFactory, cfg: FederationConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VERBUND_FILE_KEY", base64.b64encode(KEY).decode())
    async with gateway_factory(cfg) as gw:
        r = await gw.client.post(
            "/v1/files",
            data={"purpose": "fine-tune"},
            files={"file": ("data.csv", b"a,b,label\n1,x,2\n", "text/csv")},
            headers={**gw.auth(), "X-Verbund-Data-Class": "internal"},
        )
        assert r.status_code == 200, r.text
        job = await create_training(gw, recipe="centroid-classifier", training_file=r.json()["id"])
        done = await wait_for(gw, job["id"], ("succeeded", "failed"))
        assert done["status"] == "failed" and done["error"]["code"] == "invalid_file", done


@pytest.mark.real
def test_processes_a_job_at_a_site_agent_trains_on_a_file_sealed_at_the_access_point(
    tmp_path: Path,
) -> None:
    """`verbund gateway` with a file key, `verbund site` per site: the upload lies sealed
    on the access point's disk, the job at a site trains on it, no clear byte on the
    access point's disk (its state, store and log)."""
    fed = Federation(tmp_path)
    fed.env["VERBUND_FILE_KEY"] = base64.b64encode(KEY).decode()
    fed.ap = GatewayProcess(fed.config, tmp_path / "ap", env=fed.env)
    fed.start()
    try:
        ap = fed.ap
        a = fed.client(ap.url, ap.create_key("uni-a")["key"])
        data = blobs_csv().replace("f3", CANARY, 1)
        up = upload(a, data, **{"X-Verbund-Data-Class": "internal"})
        assert up.status_code == 200, up.text
        file_id = up.json()["id"]
        assert a.get(f"/v1/files/{file_id}/content").content == data.encode()
        r = a.post(
            "/v1/fine_tuning/jobs",
            json={"model": "centroid-classifier", "training_file": file_id, "suffix": "sealed"},
        )
        assert r.status_code == 200, r.text
        done = wait_job(a, r.json()["id"], ("succeeded", "failed"))
        assert done["status"] == "succeeded", done["error"]
        assert done["verbund"]["site"] in ("west", "ost")
    finally:
        fed.stop()
    ap_dir = tmp_path / "ap"
    (sealed,) = [p for p in (ap_dir / "state" / "files").rglob("f-*") if p.is_file()]
    assert sealed.stat().st_size > len(data)  # the file, with its seals
    assert holding(ap_dir, CANARY.encode()) == []
