"""In-process site agents behind the access point's :class:`AgentClient`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from harness.agent import AP_KEY_ENV, OPERATOR_KEY_ENV, keys_for, site_toml
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
