"""The load of announced backends, with real processes: two engines (``verbund.simengine``,
vLLM's metrics) behind one `verbund site` agent, and `verbund gateway` following it. The
agent scrapes its engines; the access point asks the agent for their load and routes
away from the busy one, although none of that load passed through it."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import httpx
import pytest

from harness.agent import AgentProcess, agent_key_env, site_toml
from harness.federation import federation, institution
from harness.gateway import GatewayProcess
from harness.polling import poll
from harness.ports import free_port
from harness.simengine import MODEL, EngineProcess, EngineSpec

pytestmark = pytest.mark.real

PROMPT = "Wie wird das Wetter morgen in Aachen?"  # one prompt: affinity picks one backend


def _chat(url: str, key: str, max_tokens: int, timeout: float = 60) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions",
        json={
            "model": MODEL,
            "messages": [{"role": "user", "content": PROMPT}],
            "max_tokens": max_tokens,
        },
        headers={"authorization": f"Bearer {key}"},
        timeout=timeout,
        trust_env=False,
    )


def test_routing_prefers_the_less_loaded_of_two_announced_backends(tmp_path: Path) -> None:
    engines = {
        n: EngineProcess(EngineSpec(n, slots=2, decode_ms_per_token=20.0), tmp_path)
        for n in ("west-a", "west-b")
    }
    config = site_toml(
        "west",
        f"127.0.0.1:{free_port()}",
        tmp_path / "site-west",
        backends=[
            {
                "name": n,
                "url": e.url,
                "models": [MODEL],
                "metrics_url": e.url + "/metrics",  # reachable from the site, read by its agent
                "max_concurrency": 2,
            }
            for n, e in engines.items()
        ],
        models=[{"name": MODEL, "kind": "chat", "license": "Apache-2.0"}],
        routing={"probe_interval": 0.5, "metrics_interval": 0.2},
    )
    agent = AgentProcess(config, tmp_path)
    ap_config = federation(
        "ap-load",
        tmp_path / "ap",
        [{"name": "west", "agent_url": agent.url, "agent_key_env": agent_key_env("west")}],
        port=free_port(),
        gateway={"home_site": "west"},
        institutions=[institution("uni-a", home_region="NW")],
        routing={"metrics_interval": 0.2},
    )
    gateway = GatewayProcess(ap_config, tmp_path / "ap", env={agent_key_env("west"): agent.ap_key})
    loaders: list[threading.Thread] = []
    try:
        for e in engines.values():
            e.start()
        agent.start()
        gateway.serve()
        assert set(gateway.backends()) == {"west-a", "west-b"}  # announced, not configured

        def received() -> dict[str, int]:
            return {n: int(e.stats()["received"]) for n, e in engines.items()}

        before = received()
        assert _chat(gateway.url, gateway.key, 4).status_code == 200
        after = received()
        (chosen,) = [n for n in engines if after[n] > before[n]]  # where this prompt goes
        other = next(n for n in engines if n != chosen)

        # load the chosen engine directly, past the access point: only its metrics tell
        busy = engines[chosen]

        def load() -> None:
            with (
                httpx.Client(trust_env=False, timeout=60) as c,
                contextlib.suppress(httpx.HTTPError),  # the engine stops at the test's end
            ):
                c.post(
                    f"{busy.url}/v1/chat/completions",
                    json={"model": MODEL, "messages": [{"role": "user", "content": "x"}],
                          "max_tokens": 400},
                )  # fmt: skip

        loaders = [threading.Thread(target=load, daemon=True) for _ in range(6)]
        started = time.monotonic()
        for t in loaders:
            t.start()
        poll(
            lambda: (gateway.backends()[chosen].get("engine_load") or 0) >= 5,
            f"the access point to learn {chosen}'s load from the agent",
            20,
            every=0.1,
        )
        # measured, not asserted: engine -> agent's scrape -> access point's poll
        print(f"load known at the access point after {time.monotonic() - started:.2f} s")
        assert gateway.backends()[other]["engine_load"] == 0  # read too, and idle
        before = received()
        for _ in range(6):
            assert _chat(gateway.url, gateway.key, 4).status_code == 200
        after = received()
        assert after[other] - before[other] == 6
        assert after[chosen] == before[chosen]
    finally:
        gateway.stop()
        agent.stop()
        for e in engines.values():
            e.stop()
        for t in loaders:
            t.join(30)
