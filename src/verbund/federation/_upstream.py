"""One pooled HTTP client per backend, built once and shared by proxy and probes."""

from __future__ import annotations

import os
from collections.abc import Callable

import httpx

from verbund.config import RoutingConfig
from verbund.errors import ConfigError
from verbund.federation._backend import Backend
from verbund.federation._federation import Federation

TransportFactory = Callable[[Backend], httpx.AsyncBaseTransport | None]


class UpstreamPool:
    """Keep-alive clients per backend. Tests pass ``transport_factory`` to fake the network."""

    def __init__(
        self,
        federation: Federation,
        routing: RoutingConfig,
        transport_factory: TransportFactory | None = None,
    ) -> None:
        self._clients: dict[str, httpx.AsyncClient] = {}
        missing: list[tuple[str, str]] = []
        for b in federation.backends.values():
            headers: dict[str, str] = {}
            if b.config.api_key_env:
                secret = os.environ.get(b.config.api_key_env)
                if not secret:
                    missing.append(
                        (f"backends[{b.name}].api_key_env", f"${b.config.api_key_env} is not set")
                    )
                    continue
                headers["authorization"] = f"Bearer {secret}"
            transport = transport_factory(b) if transport_factory else None
            self._clients[b.name] = httpx.AsyncClient(
                base_url=b.url,
                headers=headers,
                transport=transport,
                timeout=httpx.Timeout(
                    routing.read_timeout,
                    connect=routing.connect_timeout,
                    pool=routing.connect_timeout,
                ),
                limits=httpx.Limits(max_connections=1000, max_keepalive_connections=100),
                follow_redirects=False,
                trust_env=False,
            )
        if missing:
            raise ConfigError(missing)

    def client(self, backend: Backend) -> httpx.AsyncClient:
        return self._clients[backend.name]

    async def aclose(self) -> None:
        for c in self._clients.values():
            await c.aclose()
