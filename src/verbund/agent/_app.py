"""The site agent's ASGI app: authentication first, then routes from their own modules.

Each concern of the agent (operations, catalogue, lifecycle, relay, and later jobs and
files) is a module with a ``routes()`` function; :data:`ROUTE_MODULES` lists them, so a
new concern mounts its routes without touching the others. Errors come out in OpenAI's
shape, as at the access point.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute

from verbund.agent import (
    _blobs,
    _catalogue,
    _demand,
    _erasure,
    _jobs,
    _lifecycle,
    _ops,
    _relay,
    _reload,
    _trust,
)
from verbund.agent._auth import AgentAuthMiddleware
from verbund.agent._config import SiteAgentConfig
from verbund.agent._services import AgentServices
from verbund.federation import TransportFactory
from verbund.server import error_handlers

__all__ = ["ROUTE_MODULES", "create_agent_app"]

log = logging.getLogger("verbund.agent")

ROUTE_MODULES: tuple[Callable[[], list[BaseRoute]], ...] = (
    _ops.routes,
    _catalogue.routes,
    _lifecycle.routes,
    _reload.routes,
    _relay.routes,
    _jobs.routes,
    _blobs.routes,
    _demand.routes,
    _trust.routes,
    _erasure.routes,
)


def create_agent_app(
    config: SiteAgentConfig,
    *,
    env: Mapping[str, str] | None = None,
    background: bool = True,
    config_path: Path | None = None,
    transport_factory: TransportFactory | None = None,
) -> Starlette:
    """Build one site agent. ``env`` stands in for the environment the credentials are
    read from (tests); ``background=False`` starts no background loops (no probes);
    ``config_path`` is the site.toml to follow; ``transport_factory`` puts in-process
    backends behind the agent's clients (tests)."""
    svc = AgentServices.build(
        config, env, config_path=config_path, transport_factory=transport_factory
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await svc.start(background=background)
        try:
            yield
        finally:
            await svc.stop()

    routes: list[BaseRoute] = [r for module_routes in ROUTE_MODULES for r in module_routes()]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(AgentAuthMiddleware, credentials=svc.credentials)],
        lifespan=lifespan,
        exception_handlers=error_handlers("site agent", log),
    )
    app.router.redirect_slashes = False
    app.state.services = svc
    return app
