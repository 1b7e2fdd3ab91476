"""An access point and three site agents as real processes, each site in its own network
namespace where the machine allows it (loopback otherwise): catalogues followed without
a restart, a stale catalogue served while an agent is down, inference through an agent
to an engine only it can reach, and operator credentials.

The bound for a model added at a running agent to be routable at the access point is
``PROPAGATION_BOUND`` (site.toml checked every second, the catalogue long-polled); the
measured time is printed (``benchmarks/agent_relay.py`` measures it properly).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from harness.agent import AgentFederation
from harness.federation import federation, institution
from harness.gateway import GatewayProcess
from harness.netns import Lab, unavailable
from harness.polling import poll
from harness.ports import free_port

pytestmark = pytest.mark.real

TAG = f"va{os.getpid() % 100000}"
PROPAGATION_BOUND = 5.0
SITES = [  # name, region, ingress, models the engine serves besides the two offered
    ("west", "NW", "direct", ["west-extra"]),
    ("sued", "BY", "direct", []),
    ("ost", "SN", "agent", []),
]


@pytest.fixture(scope="module")
def fed(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[AgentFederation, GatewayProcess]]:
    work = tmp_path_factory.mktemp("agents")
    reason = unavailable(TAG)
    lab = Lab(TAG, work) if reason is None else None
    if lab is None:
        print(f"network namespaces unavailable ({reason}): the sites share the loopback")
    sites = AgentFederation(work, SITES, lab=lab)
    gateway: GatewayProcess | None = None
    try:
        sites.start()
        config = federation(
            "ap-agents",
            work / "ap",
            sites.gateway_sites(),
            port=free_port(),
            gateway={"home_site": "west"},
            institutions=[institution("uni-a", home_region="NW")],
        )
        gateway = GatewayProcess(config, work / "ap", env=sites.gateway_env())
        gateway.serve()
        yield sites, gateway
    finally:
        if gateway is not None:
            gateway.stop()
        sites.close()
        if lab is not None:
            lab.close()


def _chat(gateway: GatewayProcess, model: str) -> httpx.Response:
    return httpx.post(
        gateway.url + "/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "Hallo"}], "max_tokens": 4},
        headers={"authorization": f"Bearer {gateway.key}"},
        timeout=30,
        trust_env=False,
    )


def _site_status(gateway: GatewayProcess, name: str) -> dict[str, Any]:
    status = httpx.get(gateway.url + "/status", timeout=10, trust_env=False).json()
    site: dict[str, Any] = next(s for s in status["sites"] if s["name"] == name)
    return site


def test_every_sites_models_are_served(fed: tuple[AgentFederation, GatewayProcess]) -> None:
    sites, gateway = fed
    for name in sites.sites:
        r = _chat(gateway, f"{name}-llm")
        assert r.status_code == 200, r.text
        assert r.headers["x-verbund-site"] == name


def test_the_agent_is_the_ingress_to_an_engine_only_it_reaches(
    fed: tuple[AgentFederation, GatewayProcess],
) -> None:
    sites, gateway = fed
    ost = sites.sites["ost"]
    if ost.netns is not None:  # the engine listens on the namespace's own loopback
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://{ost.netns.ns_ip}:8001/health", timeout=2, trust_env=False)
    backend = gateway.backends()["ost-1"]
    assert backend["healthy"]
    r = _chat(gateway, "ost-llm")
    assert r.status_code == 200 and r.headers["x-verbund-site"] == "ost"


def test_a_model_added_to_a_running_agent_is_routable(
    fed: tuple[AgentFederation, GatewayProcess],
) -> None:
    sites, gateway = fed
    west = sites.sites["west"]
    assert _chat(gateway, "west-extra").status_code == 404
    written = west.offer([*west.models, "west-extra"])
    poll(lambda: _chat(gateway, "west-extra").status_code == 200, "west-extra", 30, every=0.05)
    took = time.time() - written
    print(f"model added at the agent: routable at the access point after {took:.2f}s")
    assert took <= PROPAGATION_BOUND
    written = west.offer([m for m in west.models if m != "west-extra"])
    poll(lambda: _chat(gateway, "west-extra").status_code == 404, "west-extra gone", 30, 0.05)
    print(
        f"model removed at the agent: gone at the access point after {time.time() - written:.2f}s"
    )


def test_a_stale_catalogue_is_served_until_the_agent_returns(
    fed: tuple[AgentFederation, GatewayProcess],
) -> None:
    sites, gateway = fed
    sued = sites.sites["sued"]
    sued.agent.kill()
    poll(lambda: _site_status(gateway, "sued")["catalogue"]["stale"], "sued stale", 30, 0.1)
    r = _chat(gateway, "sued-llm")  # its engine still runs, reached directly
    assert r.status_code == 200 and r.headers["x-verbund-site"] == "sued"
    # a restarted access point serves from the catalogue in its store
    gateway.stop()
    gateway.start()
    assert _site_status(gateway, "sued")["catalogue"]["source"] == "store"
    assert _chat(gateway, "sued-llm").status_code == 200
    sued.agent.start()
    poll(lambda: not _site_status(gateway, "sued")["catalogue"]["stale"], "resync", 30, 0.1)
    assert _site_status(gateway, "sued")["catalogue"]["source"] == "agent"


def test_operator_credentials(fed: tuple[AgentFederation, GatewayProcess]) -> None:
    sites, gateway = fed
    west, sued = sites.sites["west"], sites.sites["sued"]
    with west.agent.client(west.agent.operator_key) as op:
        assert op.post("/sites/sued/drain").status_code == 403
        r = op.post("/sites/west/drain")
        assert r.status_code == 200 and r.json()["actor"] == "operator:op-west"
    with sued.agent.client(west.agent.operator_key) as stranger:
        assert stranger.post("/sites/sued/drain").status_code == 401
    with west.agent.client("forged-0123456789abcdef") as forged:
        assert forged.post("/sites/west/resume").status_code == 401
    poll(lambda: _site_status(gateway, "west")["state"] == "draining", "west draining", 30, 0.1)
    r = _chat(gateway, "sim-llm")
    assert r.status_code == 200 and r.headers["x-verbund-site"] != "west"
    with west.agent.client(west.agent.operator_key) as op:
        assert op.post("/sites/west/resume").status_code == 200
    poll(lambda: _site_status(gateway, "west")["state"] == "active", "west active", 30, 0.1)
