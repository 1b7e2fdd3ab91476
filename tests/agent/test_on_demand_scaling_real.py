"""On-demand scaling on a real single-node Slurm with real llama.cpp engines: steady
concurrent load above the threshold starts a second instance that takes traffic (both
stop once the load has ended), and a one-minute time limit is survived by renewal with
no failed request."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from harness.agent import AgentProcess
from harness.gateway import GatewayProcess
from harness.on_demand import MODEL, Load, on_demand_federation, on_demand_view
from harness.polling import poll
from harness.slurm import SlurmCluster

pytestmark = pytest.mark.real

Start = Callable[..., tuple[AgentProcess, GatewayProcess]]


@pytest.fixture
def start(tmp_path: Any, slurm: SlurmCluster) -> Iterator[Start]:
    with contextlib.ExitStack() as running:

        def go(**spec: Any) -> tuple[AgentProcess, GatewayProcess]:
            return running.enter_context(
                on_demand_federation(tmp_path, slurm, log_level="info", **spec)
            )

        yield go


def _instances(agent: AgentProcess) -> list[dict[str, Any]]:
    instances: list[dict[str, Any]] = on_demand_view(agent)["instances"]
    return instances


def test_load_above_the_threshold_starts_a_second_instance_and_both_stop_after(
    start: Start, slurm: SlurmCluster
) -> None:
    agent, gw = start(max_instances=2, scale_up_load=1.0, idle_timeout=6.0)
    with Load(gw, workers=3) as load:
        poll(
            lambda: sum(i["state"] == "ready" for i in _instances(agent)) == 2,
            "a second ready instance",
            90,
            every=0.5,
        )
        served_before = len(load.statuses)
        poll(lambda: len(load.statuses) >= served_before + 6, "requests after it", 60, 0.5)
    assert set(load.statuses) == {200}
    backends = gw.backends()
    od = [b for name, b in backends.items() if name.startswith(f"{MODEL}:")]
    assert len(od) == 2  # both announced and routable at the access point
    poll(
        lambda: all(i["state"] == "stopped" for i in _instances(agent)),
        "both instances to stop",
        60,
        every=0.5,
    )
    poll(
        lambda: "verbund-" not in slurm.run("squeue", "-h", "-o", "%j").stdout,
        "their jobs to leave the queue",
        30,
        every=0.5,
    )


def test_a_short_time_limit_is_survived_by_renewal_without_failed_requests(
    start: Start,
) -> None:
    agent, gw = start(time_limit_minutes=1, renew_before=35.0, idle_timeout=30.0)
    with Load(gw, workers=1) as load:
        poll(
            lambda: any(i["reason"] == "renewal" for i in _instances(agent)),
            "a renewal start",
            90,
            every=0.5,
        )
        poll(
            lambda: (
                any(i["reason"] == "renewal" and i["state"] == "ready" for i in _instances(agent))
                and any(
                    i["reason"] == "cold start" and i["state"] == "stopped"
                    for i in _instances(agent)
                )
            ),
            "the replacement ready and the first instance stopped",
            60,
            every=0.5,
        )
        n = len(load.statuses)
        poll(lambda: len(load.statuses) >= n + 3, "requests on the replacement", 30, 0.5)
    assert load.statuses and set(load.statuses) == {200}
