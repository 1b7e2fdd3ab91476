"""Several real access points (``verbund gateway`` processes) sharing PostgreSQL and Redis,
in front of simulated engine processes."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from harness import federation as fed
from harness.gateway import GatewayProcess
from harness.ports import free_port
from harness.simengine import MODEL, EngineProcess, EngineSpec

T = TypeVar("T")
INSTITUTIONS = [
    fed.institution("uni-a", home_region="R0"),
    fed.institution("uni-q", requests_per_minute=40),
]


def start_engine(name: str, tmp: Path, *, slots: int = 16, decode_ms: float = 1.0) -> EngineProcess:
    spec = EngineSpec(name, slots=slots, decode_ms_per_token=decode_ms, prefill_ms_per_token=0.05)
    return EngineProcess(spec, tmp).start()


@dataclass
class Cluster:
    tmp: Path
    store_url: str
    redis_url: str
    engines: list[EngineProcess]
    institutions: list[dict[str, Any]] = field(default_factory=lambda: list(INSTITUTIONS))
    gateways: dict[str, GatewayProcess] = field(default_factory=dict)

    def config(self, name: str, port: int) -> dict[str, Any]:
        sites = [
            fed.site(
                f"site-{i}",
                f"R{i}",
                [e.spec.backend(e.url)],
                max_data_class="sensitive",
            )
            for i, e in enumerate(self.engines)
        ]
        return fed.federation(
            name,
            self.tmp / name,
            sites,
            port=port,
            store={"url": self.store_url},
            coordination={"redis_url": self.redis_url},
            routing={"probe_interval": 0.5},
            models=[MODEL],
            institutions=self.institutions,
        )

    def start_gateway(self, name: str, port: int | None = None) -> GatewayProcess:
        """An access point ``name``; its config, log and state in ``tmp/name``."""
        if name in self.gateways:
            self.gateways.pop(name).stop()
        gw = GatewayProcess(self.config(name, port or free_port()), self.tmp / name)
        self.gateways[name] = gw
        return gw.start()

    def stop(self) -> None:
        for gw in self.gateways.values():
            gw.stop()
        for e in self.engines:
            e.stop()


def chat(url: str, key: str, **kw: Any) -> httpx.Response:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, **kw}
    return httpx.post(
        url + "/v1/chat/completions",
        json=body,
        timeout=30,
        trust_env=False,
        headers={"authorization": f"Bearer {key}"},
    )


def in_one_minute(run: Callable[[], T]) -> T:
    """Run a quota test inside one minute window (quota windows are calendar minutes).

    If the run crossed into the next minute, the counters were reset halfway and the
    outcome means nothing: wait for a fresh minute and run it again, once.
    """
    if time.time() % 60 > 40:
        time.sleep(60.2 - time.time() % 60)
    began = int(time.time() // 60)
    result = run()
    if int(time.time() // 60) == began:
        return result
    time.sleep(60.2 - time.time() % 60)
    began = int(time.time() // 60)
    result = run()
    assert int(time.time() // 60) == began, "the run takes longer than a minute"
    return result
