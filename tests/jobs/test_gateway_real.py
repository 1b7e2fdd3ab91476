"""`verbund gateway` and `verbund site` as operators run them: TOML configs, a site agent
per site with a local runner, the openai SDK over HTTP, scikit-learn training, the CLI,
and a SIGKILL of the access point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from harness import federation as fed
from harness.gateway import GatewayProcess
from harness.polling import poll
from harness.ports import free_port
from harness.training import SiteAgents
from tests.jobs.helpers import digits

pytestmark = pytest.mark.real


def config(state: Path, port: int) -> dict[str, Any]:
    runner = {"kind": "local", "cpus": 1, "memory_mb": 2048}
    return fed.federation(
        "ap-jobs",
        state,
        [
            fed.site("rz-west", "NW", max_data_class="sensitive", runner=runner),
            fed.site("rz-ost", "SN", max_data_class="internal", runner=runner),
        ],
        port=port,
        gateway={"home_site": "rz-west"},
        training={"poll_interval": 0.2},
        institutions=[
            fed.institution("uni-a", home_region="NW"),
            fed.institution("uni-b", home_region="SN"),
        ],
    )


def cli(gw: GatewayProcess, *args: str, key: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VERBUND_URL": gw.url, "VERBUND_ADMIN_KEY": gw.admin_key}
    if key:
        env["VERBUND_API_KEY"] = key
    return subprocess.run(
        [sys.executable, "-m", "verbund.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayProcess]:
    cfg = config(tmp_path / "state", free_port())
    agents = SiteAgents(tmp_path)
    g = GatewayProcess(cfg, tmp_path, env=agents.attach(cfg))
    try:
        agents.start()
        g.start(path="/healthz")
        yield g
    finally:
        g.stop()
        agents.stop()


def wait_status(c: openai.OpenAI, job_id: str, want: tuple[str, ...], within: float = 120.0) -> str:
    status = ""

    def reached() -> bool:
        nonlocal status
        status = c.fine_tuning.jobs.retrieve(job_id).status
        return status in want

    poll(reached, f"{job_id} to reach {want}", within, every=0.2)
    return status


def test_sdk_cli_and_a_killed_access_point(gateway: GatewayProcess, tmp_path: Path) -> None:
    created = cli(gateway, "keys", "create", "--institution", "uni-a", "--json")
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)["key"]
    train, held_x, held_y = digits()
    files = tmp_path / "state" / "files" / "uni-a"
    files.mkdir(parents=True)
    (files / "file-digits").write_text(train)
    c = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)

    job = c.fine_tuning.jobs.create(
        model="sklearn-classifier",
        training_file="file-digits",
        suffix="digits",
        hyperparameters={"n_epochs": 20, "batch_size": 32},
    )
    poll(
        lambda: any(
            e.type == "metrics" for e in c.fine_tuning.jobs.list_events(job.id, limit=5).data
        ),
        "training to report progress",
        120,
        every=0.2,
    )
    gateway.kill()  # the access point dies; the job at the site does not
    gateway.start(path="/healthz")
    assert wait_status(c, job.id, ("succeeded", "failed")) == "succeeded"
    done = c.fine_tuning.jobs.retrieve(job.id)
    assert done.fine_tuned_model == "ft:sklearn-classifier:uni-a:digits"
    steps = []
    page = c.fine_tuning.jobs.list_events(job.id, limit=100)
    for e in page.data:
        if e.type == "metrics":
            steps.append(e.data["step"])
    assert sorted(steps) == list(range(1, 21))  # every step once, across the crash

    assert done.fine_tuned_model in [m.id for m in c.models.list().data]
    r = httpx.post(
        f"{gateway.url}/v2/models/{done.fine_tuned_model}/infer",
        json={
            "inputs": [
                {"name": "x", "shape": [len(held_x), 64], "datatype": "FP32", "data": held_x}
            ]
        },
        headers={"authorization": f"Bearer {key}"},
        timeout=30,
        trust_env=False,
    )
    assert r.status_code == 200, r.text
    predicted = r.json()["outputs"][0]["data"]
    assert sum(p == t for p, t in zip(predicted, held_y, strict=True)) / len(held_y) > 0.85

    listed = cli(gateway, "jobs", "list")
    assert listed.returncode == 0, listed.stderr
    assert job.id in listed.stdout and "succeeded" in listed.stdout and "rz-west" in listed.stdout
    own = cli(gateway, "jobs", "list", "--json", key=key)
    assert [j["id"] for j in json.loads(own.stdout)] == [job.id]
    shown = json.loads(cli(gateway, "jobs", "show", job.id).stdout)
    assert shown["result_model"] == done.fine_tuned_model
    events_out = cli(gateway, "jobs", "events", job.id)
    assert "The job has successfully completed" in events_out.stdout
    refused = cli(gateway, "jobs", "cancel", job.id)
    assert refused.returncode == 1 and "cannot be cancelled" in refused.stderr
    usage = cli(gateway, "usage", "--group-by", "institution,site,endpoint", "--format", "json")
    rows = {
        r["site"]: r for r in json.loads(usage.stdout) if r["endpoint"] == "/v1/fine_tuning/jobs"
    }
    # the request that created the job (at the access point), and the job's run
    assert sorted(rows) == ["", "rz-west"] and rows["rz-west"]["cpu_seconds"] > 0
