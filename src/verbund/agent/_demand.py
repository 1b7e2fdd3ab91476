"""Demand for on-demand models, from the access points: ``POST /on-demand/{model}``.

An access point reports, for one model, the requests waiting for an instance, the
requests in flight per instance (by backend name) and how many seconds ago the model last
had a request; waiting requests for a model with nothing ready start it. The answer is
the model's status and how long a start is expected to take (the access point's
``Retry-After``). ``GET /on-demand`` shows operators every model's instances and the node
time they held; ``GET /on-demand/node-time?since=UNIX`` gives the access points that node
time per model and UTC hour (running instances' up to now), for their usage reports.
"""

from __future__ import annotations

import math
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from verbund.agent._auth import Role, require
from verbund.errors import BadRequest, NotFound

__all__ = ["routes"]


def _count(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 1_000_000:
        raise BadRequest(f"'{name}' must be a whole number from 0.", param=name)
    return value


async def report(request: Request) -> Response:
    caller = require(request, Role.access_point, Role.operator)
    svc = request.app.state.services
    model = request.path_params["model"]
    if model not in svc.on_demand.models:
        raise NotFound(f"The model '{model}' is not on demand at this site.", param="model")
    try:
        body = await request.json()
    except ValueError:
        raise BadRequest("The body must be a JSON object.") from None
    if not isinstance(body, dict):
        raise BadRequest("The body must be a JSON object.")
    waiting = _count(body.get("waiting", 0), "waiting")
    flight = body.get("in_flight", {})
    if not isinstance(flight, dict):
        raise BadRequest("'in_flight' must map backends to counts.", param="in_flight")
    in_flight = {str(k): _count(v, "in_flight") for k, v in flight.items()}
    idle = body.get("idle_seconds")
    if idle is not None and (
        not isinstance(idle, int | float) or not math.isfinite(idle) or idle < 0
    ):
        raise BadRequest("'idle_seconds' must be a number of seconds.", param="idle_seconds")
    svc.on_demand.report(model, caller.name, waiting, in_flight, idle)
    return JSONResponse(
        {
            "model": model,
            "status": svc.on_demand.status(model),
            "expected_start_seconds": round(svc.on_demand.expected_start(model), 3),
        }
    )


async def view(request: Request) -> Response:
    require(request, Role.access_point, Role.operator)
    return JSONResponse({"models": request.app.state.services.on_demand.view()})


async def node_time(request: Request) -> Response:
    require(request, Role.access_point, Role.operator)
    raw = request.query_params.get("since", "0")
    try:
        since = float(raw)
    except ValueError:
        since = -1.0
    if not math.isfinite(since) or since < 0:
        raise BadRequest("'since' must be Unix seconds, 0 or more.", param="since")
    svc = request.app.state.services
    return JSONResponse({"site": svc.site, "hours": svc.on_demand.node_time_buckets(since)})


def routes() -> list[BaseRoute]:
    return [
        Route("/on-demand", view, methods=["GET"]),
        Route("/on-demand/node-time", node_time, methods=["GET"]),
        Route("/on-demand/{model}", report, methods=["POST"]),
    ]
