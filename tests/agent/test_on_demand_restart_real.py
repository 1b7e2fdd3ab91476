"""A site agent restarted while its on-demand model runs on a real Slurm: the next run takes
the job over (no second ``sbatch``), the model keeps serving through the restart, and the
idle timeout, counted from the last request, still ends the job."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from harness.on_demand import MODEL, on_demand_federation, on_demand_view
from harness.polling import poll
from harness.slurm import SlurmCluster

pytestmark = pytest.mark.real

IDLE = 20.0


def _jobs(slurm: SlurmCluster) -> list[tuple[str, str]]:
    out = slurm.run("squeue", "-h", "-o", "%i %T %j").stdout
    return [
        (line.split()[0], line.split()[1])
        for line in out.splitlines()
        if f"verbund-{MODEL}" in line
    ]


def test_a_restarted_agent_adopts_its_running_job(tmp_path: Path, slurm: SlurmCluster) -> None:
    with on_demand_federation(
        tmp_path,
        slurm,
        routing={"cold_start_wait": 120},
        log_level="info",
        keep_instances=True,
        idle_timeout=IDLE,
        time_limit_minutes=30,
    ) as (agent, gw):

        def chat() -> httpx.Response:
            with httpx.Client(base_url=gw.url, trust_env=False, timeout=180) as c:
                return c.post(
                    "/v1/chat/completions",
                    headers={"authorization": f"Bearer {gw.key}"},
                    json={"model": MODEL, "messages": [{"role": "user", "content": "Hi."}],
                          "max_tokens": 4},
                )  # fmt: skip

        poll(lambda: chat().status_code == 200, "the model started and answering", 150, 1.0)
        ((job, state),) = _jobs(slurm)
        assert state == "RUNNING"
        agent.stop()
        assert _jobs(slurm) == [(job, "RUNNING")]  # the job outlives the agent
        assert chat().status_code == 200  # and serves while the agent is away
        agent.start()
        poll(lambda: on_demand_view(agent)["status"] == "ready", "the job taken over", 60, 0.5)
        (inst,) = on_demand_view(agent)["instances"]
        assert inst["job"] == job and inst["state"] == "ready"
        assert chat().status_code == 200
        assert _jobs(slurm) == [(job, "RUNNING")]  # no second start
        poll(lambda: not _jobs(slurm), "the idle job to end", IDLE + 60, every=0.5)
        assert on_demand_view(agent)["status"] == "stopped"
        events = [
            json.loads(line)
            for line in (Path(agent.config["agent"]["state_dir"]) / "on-demand" / "events.jsonl")
            .read_text()
            .splitlines()
        ]
        assert [e["event"] for e in events] == ["start", "ready", "adopt", "ready", "stop"]
        assert {e["job"] for e in events} == {job}
