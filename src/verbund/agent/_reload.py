"""Changing what the site offers while the agent runs: site.toml is read again.

The file stays the one description of the site: an operator (or their configuration
management) edits it, and the agent takes it up when the file changes (checked every
second), on ``SIGHUP``, or on ``POST /site/reload`` with an operator credential. A
restart therefore gives the same offer as a reload, and no second copy of the catalogue
lives in a database to drift from the file. A file with problems (a model above the
site's ``max_data_class``, a backend serving an undeclared model, broken TOML) is
refused whole and the running offer stays; the route answers 400 naming each problem.
``[agent]`` (listen address, TLS, store) needs a restart; credentials take effect at once.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from verbund.agent._auth import Role, require
from verbund.errors import BadRequest, ConfigError

__all__ = ["routes"]


async def reload(request: Request) -> Response:
    require(request, Role.operator)
    svc = request.app.state.services
    try:
        changed = await svc.reload_file()
    except ConfigError as exc:
        raise BadRequest(
            "site.toml was not taken up: "
            + "; ".join(f"{p or '<file>'}: {m}" for p, m in exc.problems),
            code="invalid_site_config",
        ) from None
    return JSONResponse(
        {
            "reloaded": changed,
            "models": [m.name for m in svc.config.models],
            "backends": [b.name for b in svc.config.backends],
        }
    )


def routes() -> list[BaseRoute]:
    return [Route("/site/reload", reload, methods=["POST"])]
