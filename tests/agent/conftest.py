"""In-process site agents behind the access point's :class:`AgentClient`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from harness.agent import AP_KEY_ENV, OPERATOR_KEY_ENV, keys_for, site_toml
from harness.slurm import SlurmCluster, start_slurm
from verbund.agent import AgentServices, SiteAgentConfig, create_agent_app, parse_site_config
from verbund.federation import AgentClient

SITE = "west"
KEYS = keys_for(SITE)
AP_KEY = KEYS[AP_KEY_ENV]
OPERATOR_KEY = KEYS[OPERATOR_KEY_ENV]


def site_dict(state_dir: Path, **kw: Any) -> dict[str, Any]:
    return site_toml(SITE, "127.0.0.1:9100", state_dir, **kw)


class InProcessAgent:
    def __init__(self, app: Starlette, transport: httpx.ASGITransport) -> None:
        self.app = app
        self.transport = transport
        self.services: AgentServices = app.state.services

    def client(self, key: str = AP_KEY) -> AgentClient:
        """The access point's client of this agent (with ``key`` as its credential)."""
        return AgentClient(SITE, "http://agent", key, transport=self.transport)

    def http(self, key: str | None = AP_KEY) -> httpx.AsyncClient:
        """A plain HTTP client (``key=None``: no credential at all)."""
        headers = {"authorization": f"Bearer {key}"} if key is not None else {}
        return httpx.AsyncClient(transport=self.transport, base_url="http://agent", headers=headers)


AgentFactory = Callable[..., Any]


@pytest.fixture
def agent_factory(tmp_path: Path) -> AgentFactory:
    @asynccontextmanager
    async def factory(config: SiteAgentConfig | None = None) -> AsyncIterator[InProcessAgent]:
        cfg = config or parse_site_config(site_dict(tmp_path / "site"))
        app = create_agent_app(cfg, env=KEYS, background=False)
        async with app.router.lifespan_context(app):
            yield InProcessAgent(app, httpx.ASGITransport(app=app))

    return factory


@pytest.fixture
async def agent(agent_factory: AgentFactory) -> AsyncIterator[InProcessAgent]:
    async with agent_factory() as a:
        yield a


# --- an access point linked to an in-process agent ---------------------------------------

AGENT_KEY_ENV = "WEST_AGENT_KEY"


def offer(models: list[str], *, backend: str = "west-a", **site: Any) -> dict[str, Any]:
    """The ``site`` / ``backends`` / ``models`` part of west's site.toml."""
    return {
        "site": {"name": SITE, "region": "NW", "jurisdiction": "DE", **site},
        "backends": [{"name": backend, "url": f"http://{backend}.invalid:8000", "models": models}]
        if models
        else [],
        "models": [{"name": m, "kind": "chat", "license": "Apache-2.0"} for m in models],
    }


class Linked:
    """An in-process access point whose site ``west`` is announced by an in-process agent;
    site ``sued`` has a plain backend of its own."""

    def __init__(self, gw: Any, agent: InProcessAgent, fakes: dict[str, Any]) -> None:
        self.gw = gw
        self.agent = agent
        self.fakes = fakes

    @property
    def sync(self) -> Any:
        return self.gw.services.health.catalogues

    async def refresh(self) -> bool:
        changed: bool = await self.sync.refresh(SITE)
        return changed

    async def offer(self, models: list[str], **site: Any) -> None:
        """Change what west's agent offers (as a reload of site.toml would)."""
        svc = self.agent.services
        data = svc.config.model_dump(mode="json", exclude_defaults=True)
        data.update(offer(models, **site))
        await svc.apply_config(parse_site_config(data))


LinkedFactory = Callable[..., Any]


@pytest.fixture
def linked_factory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gateway_factory: Any
) -> LinkedFactory:
    from tests.conftest import federation_dict
    from tests.fakes import FakeBackend
    from verbund.config import parse_config

    monkeypatch.setenv(AGENT_KEY_ENV, AP_KEY)

    @asynccontextmanager
    async def factory(
        models: list[str] | None = None,
        ingress: str = "direct",
        *,
        site_extra: dict[str, Any] | None = None,
        announce: dict[str, Any] | None = None,
        agent_env: dict[str, str] | None = None,
        routing: dict[str, Any] | None = None,
        configure: Callable[[dict[str, Any]], None] | None = None,
        fakes: dict[str, Any] | None = None,
        **west: Any,
    ) -> AsyncIterator[Linked]:
        """``site_extra`` adds to west's site.toml (on-demand models); their instances
        are all answered by the fake ``west-od``. ``announce`` adds to its ``[site]``
        facts, ``agent_env`` to the agent's environment (a signing key). ``routing``
        adds to the access point's routing; ``configure`` changes the rest of its config
        (a dict) as it likes; ``west`` adds to its ``[[sites]]`` entry for west.
        ``fakes`` adds model servers (by backend name) to the chat fakes."""
        fakes = {n: FakeBackend(n) for n in ("west-a", "west-b", "sued-1", "west-od")} | (
            fakes or {}
        )
        site_cfg = parse_site_config(
            {
                **site_dict(tmp_path / "site"),
                **offer(["smol"] if models is None else models, **(announce or {})),
                **(site_extra or {}),
            }
        )
        agent_app = create_agent_app(
            site_cfg,
            env={**KEYS, **(agent_env or {})},
            background=False,
            transport_factory=lambda b: httpx.MockTransport(fakes.get(b.name, fakes["west-od"])),
        )
        agent_transport = httpx.ASGITransport(app=agent_app)
        data = federation_dict(
            tmp_path / "ap",
            sites=[
                {
                    "name": SITE,
                    "agent_url": "http://agent",
                    "agent_key_env": AGENT_KEY_ENV,
                    "ingress": ingress,
                    **west,
                },
                {
                    "name": "sued",
                    "region": "BY",
                    "max_data_class": "confidential",
                    "backends": [
                        {"name": "sued-1", "url": "http://sued.invalid:8000", "models": ["smol"]}
                    ],
                },
            ],
        )
        data["routing"] = {**data["routing"], **(routing or {})}
        if configure is not None:
            configure(data)
        cfg = parse_config(data)

        def backend_transport(b: Any) -> httpx.AsyncBaseTransport:
            if b.url.startswith("http://agent/"):
                return agent_transport
            return httpx.MockTransport(fakes[b.name])

        async with agent_app.router.lifespan_context(agent_app):
            agent = InProcessAgent(agent_app, agent_transport)
            async with gateway_factory(
                cfg, fakes, transport=backend_transport, agent_transport=lambda s: agent_transport
            ) as gw:
                yield Linked(gw, agent, fakes)

    return factory


@pytest.fixture(scope="module")
def slurm() -> Iterator[SlurmCluster]:
    """A real single-node Slurm for one test module."""
    with start_slurm() as cluster:
        yield cluster
