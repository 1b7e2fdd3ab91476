"""Shared fixtures: federation configs, fake backends and in-process access points."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from starlette.applications import Starlette

from harness.agent import AP_KEY_ENV, keys_for, site_toml
from harness.services import Postgres, RedisServer
from tests.fakes import FakeBackend, transport_factory
from verbund.agent import AgentServices, create_agent_app, parse_site_config
from verbund.config import FederationConfig, SiteConfig, parse_config
from verbund.gateway import Services, create_app

ADMIN_KEY = "vbadmin-test-admin-key-0123456789"
MODEL = "smol"


def federation_dict(
    state_dir: Path, sites: list[dict[str, Any]] | None = None, **extra: Any
) -> dict[str, Any]:
    """Three sites (west sensitive/NW, sued confidential/BY, ost internal/SN), one backend each."""
    if sites is None:
        sites = [
            {"name": "west", "region": "NW", "jurisdiction": "DE", "max_data_class": "sensitive"},
            {
                "name": "sued",
                "region": "BY",
                "jurisdiction": "DE",
                "max_data_class": "confidential",
            },
            {"name": "ost", "region": "SN", "jurisdiction": "DE", "max_data_class": "internal"},
        ]
        for s in sites:
            s["backends"] = [
                {
                    "name": f"{s['name']}-1",
                    "url": f"http://{s['name']}.invalid:8000",
                    "models": [MODEL, "emb"],
                }
            ]
    data: dict[str, Any] = {
        "gateway": {"name": "ap-test", "home_site": sites[0]["name"], "state_dir": str(state_dir)},
        "store": {"url": f"sqlite+aiosqlite:///{state_dir / 'verbund.db'}"},
        "routing": {"eject_after_failures": 2, "max_attempts": 3},
        "sites": sites,
        "models": [{"name": MODEL, "kind": "chat"}, {"name": "emb", "kind": "embedding"}],
        "institutions": [
            {"id": "uni-a", "home_region": "NW", "default_data_class": "internal"},
            {
                "id": "uni-b",
                "home_region": "BY",
                "default_data_class": "public",
                "allowed_regions": ["BY"],
            },
        ],
    }
    for key, value in extra.items():
        data[key] = value
    return data


def make_config(state_dir: Path, **kwargs: Any) -> FederationConfig:
    return parse_config(federation_dict(state_dir, **kwargs))


def agent_key_env(site: str) -> str:
    """The variable an access point reads its credential at ``site``'s agent from."""
    return "VERBUND_AGENT_KEY_" + site.upper().replace("-", "_").replace(".", "_")


def with_agents(data: dict[str, Any], names: list[str] | None = None) -> dict[str, Any]:
    """A federation dict whose sites (``names``, default all) name an in-process agent."""
    for site in data["sites"]:
        if names is None or site["name"] in names:
            site["agent_url"] = f"http://agent-{site['name']}"
            site["agent_key_env"] = agent_key_env(site["name"])
    return data


def agent_env(config: FederationConfig) -> dict[str, str]:
    """The access point's credentials at the harness's agents, by variable."""
    return {
        agent_key_env(s.name): keys_for(s.name)[AP_KEY_ENV] for s in config.sites if s.agent_url
    }


def site_agent_dict(site: SiteConfig, config: FederationConfig, state_dir: Path) -> dict[str, Any]:
    """The site.toml of ``site``'s agent: the site's facts and runner as the federation
    config lists them, its state under ``state_dir``."""
    sections: dict[str, Any] = {"training": config.training.model_dump(mode="json")}
    if site.runner is not None:
        sections["runner"] = site.runner.model_dump(mode="json")
    return site_toml(
        site.name,
        "127.0.0.1:9100",
        state_dir,
        site={
            "region": site.region,
            "jurisdiction": site.jurisdiction,
            "max_data_class": site.max_data_class.value,
            "certifications": list(site.certifications),
        },
        **sections,
    )


class Gateway:
    """An access point running in-process, with fake backends and a client to call it."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        services: Services,
        fakes: dict[str, FakeBackend],
        keys: dict[str, str],
        app: Starlette,
        agents: dict[str, AgentServices] | None = None,
        links: dict[str, AgentLink] | None = None,
    ) -> None:
        self.client = client
        self.services = services
        self.fakes = fakes
        self.keys = keys
        self.app = app  # for calls that need the raw ASGI interface
        self.agents = agents or {}  # the sites' in-process agents, by site
        self.links = links or {}  # their transports, to cut in tests

    async def tick(self) -> None:
        """One step of every site agent's job loop, then of the access point's."""
        for agent in self.agents.values():
            await agent.jobs.tick()
        await self.services.jobs.tick()

    def auth(self, institution: str = "uni-a") -> dict[str, str]:
        return {"authorization": f"Bearer {self.keys[institution]}"}

    def admin(self) -> dict[str, str]:
        return {"authorization": f"Bearer {ADMIN_KEY}"}

    async def chat(self, institution: str = "uni-a", **body: Any) -> httpx.Response:
        payload = {"model": MODEL, "messages": [{"role": "user", "content": "Hallo"}], **body}
        return await self.client.post(
            "/v1/chat/completions", json=payload, headers=self.auth(institution)
        )

    def asgi_scope(self, path: str, body: bytes, institution: str = "uni-a") -> dict[str, Any]:
        """The scope of a POST as a server hands it to the app (for raw ASGI calls)."""
        return {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"authorization", self.auth(institution)["authorization"].encode()),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
            "client": ("127.0.0.1", 5000),
            "server": ("127.0.0.1", 8080),
            "state": {},
        }

    def upstream_calls(self) -> int:
        return sum(len(f.calls) for f in self.fakes.values())


GatewayFactory = Callable[..., Any]


class AgentLink(httpx.ASGITransport):
    """An in-process agent's transport that a test can cut (``down``): the access point
    then sees the agent as unreachable, as when its host or network is gone."""

    down = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("the agent is away (test)", request=request)
        return await super().handle_async_request(request)


def _by_site(
    links: dict[str, AgentLink],
) -> Callable[[SiteConfig], httpx.AsyncBaseTransport | None]:
    return lambda site: links.get(site.name)


@pytest.fixture
def gateway_factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> GatewayFactory:
    """In-process access points; every site whose config names an ``agent_url`` gets an
    in-process agent behind the access point's agent client (its state under
    ``<state_dir>/site-<name>``, sharing the access point's recipe book)."""

    @asynccontextmanager
    async def factory(
        config: FederationConfig | None = None,
        fakes: dict[str, FakeBackend] | None = None,
        *,
        transport: Any = None,
        agent_transport: Any = None,
    ) -> AsyncIterator[Gateway]:
        """``transport`` replaces the fakes' transport factory; ``agent_transport`` puts
        in-process site agents behind the access point's clients of them."""
        cfg = config or make_config(tmp_path)
        fakes = fakes or {b.name: FakeBackend(b.name) for s in cfg.sites for b in s.backends}
        state = Path(cfg.gateway.state_dir)
        async with AsyncExitStack() as stack:
            agents: dict[str, Starlette] = {}
            for site in cfg.sites if agent_transport is None else ():
                if site.agent_url:
                    agent_cfg = parse_site_config(
                        site_agent_dict(site, cfg, state / f"site-{site.name}")
                    )
                    agents[site.name] = create_agent_app(
                        agent_cfg, env=keys_for(site.name), background=False
                    )
                    await stack.enter_async_context(
                        agents[site.name].router.lifespan_context(agents[site.name])
                    )
            links = {n: AgentLink(app=a) for n, a in agents.items()}
            if agents:
                agent_transport = _by_site(links)
                for name, value in agent_env(cfg).items():
                    monkeypatch.setenv(name, value)

            app = create_app(
                cfg,
                admin_key=ADMIN_KEY,
                transport_factory=transport or transport_factory(fakes),
                background=False,
                agent_transport=agent_transport,
            )
            svc: Services = app.state.services
            services = {n: a.state.services for n, a in agents.items()}
            for agent in services.values():  # recipes a test registers reach every site
                agent.jobs.recipes.recipes = svc.jobs.recipes.recipes
            await stack.enter_async_context(app.router.lifespan_context(app))
            keys = {
                i.id: (await svc.keys.create(i.id, "test", actor="test")).key
                for i in cfg.institutions
            }
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://ap") as client:
                yield Gateway(client, svc, fakes, keys, app, services, links)

    return factory


@pytest.fixture
async def gw(gateway_factory: GatewayFactory) -> AsyncIterator[Gateway]:
    async with gateway_factory() as g:
        yield g


@pytest.fixture
def pg() -> Iterator[Postgres]:
    """A real PostgreSQL server of its own (Debian's package), for this test."""
    p = Postgres.create()
    yield p
    p.destroy()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A real Redis server of its own (Debian's package), for this test."""
    r = RedisServer.create()
    yield r
    r.stop()


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url, socket_timeout=1.0, socket_connect_timeout=1.0)
    yield client
    await client.aclose()
