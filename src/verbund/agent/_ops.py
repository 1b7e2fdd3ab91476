"""Operations routes of the agent: is it alive, and who am I to it."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from verbund.agent._auth import caller_of
from verbund.agent._services import AgentServices

__all__ = ["routes"]


async def healthz(request: Request) -> Response:
    svc: AgentServices = request.app.state.services
    caller = caller_of(request)
    return JSONResponse(
        {
            "status": "ok",
            "site": svc.site,
            "caller": {"role": caller.role, "name": caller.name},
            "state": svc.lifecycle.state.value,
            "catalogue": {"etag": svc.catalogue.etag, "long_polls": svc.catalogue.waiting},
        }
    )


def routes() -> list[BaseRoute]:
    return [Route("/healthz", healthz, methods=["GET"])]
