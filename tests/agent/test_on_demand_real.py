"""On-demand models on a real single-node Slurm: a site agent process starts llama.cpp as
an ``sbatch`` job when a request arrives at a real access point, routes to it once it is
healthy, stops it after the idle timeout (the queue empty again), keeps a waiting stream
alive with SSE comments, and replaces an instance whose job was cancelled."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.agent import AgentProcess
from harness.gateway import GatewayProcess
from harness.on_demand import (
    MODEL,
    SITE,
    Load,
    on_demand_federation,
    on_demand_view,
    stream_chat,
)
from harness.polling import poll
from harness.slurm import SlurmCluster

pytestmark = pytest.mark.real

IDLE = 6.0


@pytest.fixture(scope="module")
def fed(
    tmp_path_factory: pytest.TempPathFactory, slurm: SlurmCluster
) -> Iterator[tuple[AgentProcess, GatewayProcess]]:
    with on_demand_federation(
        tmp_path_factory.mktemp("ondemand"),
        slurm,
        routing={"keepalive_seconds": 0.5, "cold_start_wait": 120},
        log_level="info",
        idle_timeout=IDLE,
        time_limit_minutes=30,
        queue_timeout=120,
    ) as (agent, gw):
        poll(lambda: _status(gw) is not None, "the model in the access point's list", 30)
        yield agent, gw


def _status(gw: GatewayProcess) -> str | None:
    with httpx.Client(base_url=gw.url, trust_env=False, timeout=10) as c:
        r = c.get("/v1/models", headers={"authorization": f"Bearer {gw.key}"})
    found = [m for m in r.json()["data"] if m["id"] == MODEL]
    return found[0]["verbund"]["status"] if found else None


def _jobs(slurm: SlurmCluster) -> list[str]:
    out = slurm.run("squeue", "-h", "-o", "%i %T %j").stdout
    return [line for line in out.splitlines() if f"verbund-{MODEL}" in line]


def _chat(gw: GatewayProcess, **extra: Any) -> httpx.Response:
    with httpx.Client(base_url=gw.url, trust_env=False, timeout=180) as c:
        return c.post(
            "/v1/chat/completions",
            headers={"authorization": f"Bearer {gw.key}"},
            json={
                "model": MODEL,
                "messages": [{"role": "user", "content": "Say hello."}],
                "max_tokens": 8,
                **extra,
            },
        )


def _wait_stopped(agent: AgentProcess, gw: GatewayProcess, slurm: SlurmCluster) -> None:
    poll(lambda: not _jobs(slurm), "the queue to be empty", IDLE + 60, every=0.5)
    poll(lambda: _status(gw) == "stopped", "the model to show stopped", 30, every=0.25)


def test_a_request_for_a_stopped_model_starts_a_slurm_job_and_is_answered(
    fed: tuple[AgentProcess, GatewayProcess], slurm: SlurmCluster
) -> None:
    agent, gw = fed
    assert _status(gw) == "stopped" and not _jobs(slurm)
    r = _chat(gw)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"]  # llama.cpp answered
    assert r.headers["x-verbund-site"] == SITE
    assert [j.split()[1] for j in _jobs(slurm)] == ["RUNNING"]
    assert _status(gw) == "ready"
    view = on_demand_view(agent)
    assert [i["state"] for i in view["instances"]] == ["ready"]
    assert view["instances"][0]["launcher"] == "slurm"
    # idle: drained, the job cancelled, the queue empty, the model stopped
    _wait_stopped(agent, gw, slurm)
    view = on_demand_view(agent)
    assert view["status"] == "stopped" and view["node_time"]["cpu_seconds"] > 0
    events = [
        json.loads(line)
        for line in (Path(agent.config["agent"]["state_dir"]) / "on-demand" / "events.jsonl")
        .read_text()
        .splitlines()
    ]
    assert [e["event"] for e in events] == ["start", "ready", "stop"]
    assert events[0]["actor"] == "ap" and events[0]["reason"] == "cold start"


def test_a_streaming_client_gets_keep_alives_then_the_answer(
    fed: tuple[AgentProcess, GatewayProcess], slurm: SlurmCluster
) -> None:
    agent, gw = fed
    _wait_stopped(agent, gw, slurm)
    status, timed = stream_chat(gw)
    assert status == 200
    lines = [line for _, line in timed]
    assert lines[0] == ": keep-alive"
    data = [line for line in lines if line.startswith("data: ")]
    assert data[-1] == "data: [DONE]"
    text = "".join(
        (json.loads(d[6:])["choices"] or [{}])[0].get("delta", {}).get("content") or ""
        for d in data[:-1]
    )
    assert text
    first_data = lines.index(data[0])
    assert all(line == ": keep-alive" for line in lines[:first_data])


def test_a_cancelled_job_under_load_is_replaced_without_a_failed_request(
    fed: tuple[AgentProcess, GatewayProcess], slurm: SlurmCluster
) -> None:
    """scancel of the serving instance while requests arrive: those that had no byte yet
    wait for the replacement (as cold-start requests do) and are answered; none fails."""
    agent, gw = fed
    assert _chat(gw).status_code == 200
    (job,) = [j.split()[0] for j in _jobs(slurm)]
    with Load(gw, workers=2) as load:
        poll(lambda: len(load.statuses) >= 2, "requests on the first instance", 60, 0.25)
        slurm.run("scancel", job)

        def replaced() -> bool:
            ready = [i for i in on_demand_view(agent)["instances"] if i["state"] == "ready"]
            return bool(ready) and ready[0]["job"] != job

        poll(replaced, "a replacement instance", 120, every=0.5)
        served = len(load.statuses)
        poll(lambda: len(load.statuses) >= served + 4, "requests on the replacement", 60, 0.25)
    assert load.statuses and set(load.statuses) == {200}, load.errors
    (old,) = [i for i in on_demand_view(agent)["instances"] if i["job"] == job]
    assert old["state"] == "stopped" and old["detail"]  # how Slurm ended it
