"""A job placed at another site than the one holding its data, with real processes: `verbund
gateway` and two `verbund site` agents. The file moves agent to agent; the access point's
state directory, store and log never see its bytes."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness import federation as fed
from harness.gateway import GatewayProcess
from harness.polling import poll
from harness.ports import free_port
from harness.training import SiteAgents, blobs_csv
from tests.jobs.test_agents_real import holding, upload, wait_job

pytestmark = pytest.mark.real

RUNNER = {"kind": "local", "cpus": 1, "memory_mb": 2048}


def federation(state: Path) -> dict[str, Any]:
    """west and nord may both hold sensitive data; the access point only internal."""
    return fed.federation(
        "ap-1",
        state,
        [
            fed.site("west", "NW", max_data_class="sensitive", runner=dict(RUNNER)),
            fed.site("nord", "HH", max_data_class="sensitive", runner=dict(RUNNER)),
        ],
        port=free_port(),
        gateway={"home_site": "west", "max_data_class": "internal"},
        training={"poll_interval": 0.2},
        institutions=[fed.institution("uni-a", home_region="NW")],
    )


def test_a_job_at_another_site_trains_on_data_moved_agent_to_agent(tmp_path: Path) -> None:
    config = federation(tmp_path / "ap" / "state")
    agents = SiteAgents(tmp_path / "agents")
    env = agents.attach(config)
    ap = GatewayProcess(config, tmp_path / "ap", env=env)
    try:
        agents.start()
        ap.start(path="/healthz")
        key = ap.create_key("uni-a")["key"]
        canary = "canary" + secrets.token_hex(8)
        data = blobs_csv().replace("f3", canary, 1)
        with httpx.Client(
            base_url=ap.url, headers={"authorization": f"Bearer {key}"}, trust_env=False, timeout=60
        ) as a:
            up = upload(a, data, **{"X-Verbund-Data-Class": "sensitive"})
            assert up.status_code == 200, up.text
            file_id = up.json()["id"]
            west_dir = tmp_path / "agents" / "site-west"
            nord_dir = tmp_path / "agents" / "site-nord"
            assert holding(west_dir / "files", canary.encode())  # at the home site's agent
            # west's operator drains it: no new jobs there, so the job goes to nord
            west = agents.agents["west"]
            with west.client(west.operator_key) as op:
                assert op.post("/sites/west/drain").status_code == 200

            def drained() -> bool:
                sites = httpx.get(f"{ap.url}/status", timeout=10).json()["sites"]
                return any(s["name"] == "west" and s["state"] == "draining" for s in sites)

            poll(drained, "the access point to see west draining", 30, every=0.1)
            r = a.post(
                "/v1/fine_tuning/jobs",
                json={"model": "centroid-classifier", "training_file": file_id},
            )
            assert r.status_code == 200, r.text
            job = r.json()
            done = wait_job(a, job["id"], ("succeeded", "failed"))
            assert done["status"] == "succeeded", done["error"]
            assert done["verbund"]["site"] == "nord"
            events = a.get(f"/v1/fine_tuning/jobs/{job['id']}/events?limit=100").json()["data"]
            moved = f"File {file_id} moved from site west to site nord, agent to agent"
            assert moved in [e["message"] for e in events]
            rows = [[8.0, 0.0, 0.0, 3.0], [0.0, 9.0, 2.0, 0.0]]
            body = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP64", "data": rows}]}
            answer = a.post(f"/v2/models/{done['fine_tuned_model']}/infer", json=body)
            assert answer.status_code == 200, answer.text
            assert answer.headers["x-verbund-site"] == "nord"
        # the copy at nord went with the job; the file stays at west, where it was uploaded
        assert holding(nord_dir / "files", canary.encode()) == []
        assert holding(west_dir / "files", canary.encode())
        ap.stop()  # the store's last writes are on disk
        assert holding(tmp_path / "ap", canary.encode()) == []  # state, store, log
    finally:
        ap.stop()
        agents.stop()
