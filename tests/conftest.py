"""Shared fixtures: federation configs, fake backends and in-process access points."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from starlette.applications import Starlette

from harness.services import Postgres, RedisServer
from tests.fakes import FakeBackend, transport_factory
from verbund.config import FederationConfig, parse_config
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


class Gateway:
    """An access point running in-process, with fake backends and a client to call it."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        services: Services,
        fakes: dict[str, FakeBackend],
        keys: dict[str, str],
        app: Starlette,
    ) -> None:
        self.client = client
        self.services = services
        self.fakes = fakes
        self.keys = keys
        self.app = app  # for calls that need the raw ASGI interface

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


@pytest.fixture
def gateway_factory(tmp_path: Path) -> GatewayFactory:
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
        app = create_app(
            cfg,
            admin_key=ADMIN_KEY,
            transport_factory=transport or transport_factory(fakes),
            background=False,
            agent_transport=agent_transport,
        )
        svc: Services = app.state.services
        async with app.router.lifespan_context(app):
            keys = {
                i.id: (await svc.keys.create(i.id, "test", actor="test")).key
                for i in cfg.institutions
            }
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://ap") as client:
                yield Gateway(client, svc, fakes, keys, app)

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
