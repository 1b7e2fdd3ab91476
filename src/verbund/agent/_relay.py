"""The agent as its site's ingress (``ingress = "agent"``): access points send inference
to ``/relay/<backend>/<path>`` and the agent passes it to the backend behind the site's
firewall, adding the backend's own credential, and streams the answer back as it comes.

The relay decides nothing: the access point has routed, and retries, fails over and
counts usage as for any backend. A backend the agent cannot reach answers 502 (504 for a
time-out), which the access point treats as that backend's failure. Only inference and
health paths are relayed (the relay is no open proxy), bodies are neither logged nor
kept, and new inference is refused (503) while the site is in maintenance.

On-demand instances are relayed like the site's own backends while they are ready or
draining (a request routed just before a drain still arrives). One that has stopped
answers 502, not 404: for the access point it is a lost backend, and a request that got
no byte from it waits for a replacement and is sent again.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from verbund.agent._auth import Role, require
from verbund.config import SiteState
from verbund.errors import NoBackendAvailable, NotFound, UpstreamError, UpstreamTimeout
from verbund.federation import RELAY_PREFIX, UpstreamFailed, UpstreamResponse, UpstreamTimedOut

__all__ = ["routes"]

_PATHS = ("v1/", "v2/", "health")
_REQUEST_HEADERS = frozenset(
    {"content-type", "accept", "x-request-id", "traceparent", "tracestate"}
)
_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "server", "date"}
)


async def _chunks(resp: UpstreamResponse) -> AsyncIterator[bytes]:
    try:
        async for chunk in resp.chunks():
            yield chunk
    except UpstreamFailed:
        return  # the stream ends short; the access point sees it as the backend's failure
    finally:
        await resp.aclose()


async def relay(request: Request) -> Response:
    require(request, Role.access_point)
    svc = request.app.state.services
    name = request.path_params["backend"]
    path = request.path_params["path"]
    offer = svc.offer
    backend = offer.backends.get(name)
    instance = None
    if backend is None and path.startswith(_PATHS):
        instance = svc.on_demand.relayed(name)
        if instance is not None:
            backend = offer.instance(name, instance.endpoint or "", instance.model)
        elif svc.on_demand.instance_name(name):
            raise UpstreamError(f"The on-demand instance '{name}' no longer runs.")
    if backend is None or not path.startswith(_PATHS):
        raise NotFound(f"No backend '{name}' or path to relay at this site.")
    if request.method == "POST" and svc.lifecycle.state is SiteState.maintenance:
        raise NoBackendAvailable(f"Site '{svc.site}' is in maintenance.")
    target = "/" + path
    if request.url.query:
        target += "?" + request.url.query
    headers = {k: v for k, v in request.headers.items() if k in _REQUEST_HEADERS}
    upstream = offer.pool.upstream(backend)
    read_timeout = svc.config.routing.read_timeout
    try:
        if request.method == "POST":
            resp = await upstream.post(
                target, await request.body(), headers, read_timeout=read_timeout
            )
        else:
            resp = await upstream.get(target, headers, read_timeout=read_timeout)
    except UpstreamTimedOut:
        if instance is None:
            offer.prober.suspect(backend)
        raise UpstreamTimeout(f"Backend '{name}' did not answer in time.") from None
    except UpstreamFailed:
        if instance is None:
            offer.prober.suspect(backend)
        raise UpstreamError(f"Backend '{name}' is unreachable from its site agent.") from None
    if resp.status < 500 and instance is None:  # it answers: evidence for the health verdict
        offer.tracker.on_success(backend, time.monotonic())
    out_headers = {k: v for k, v in resp.headers.items() if k.lower() not in _HOP}
    return StreamingResponse(_chunks(resp), status_code=resp.status, headers=out_headers)


def routes() -> list[BaseRoute]:
    return [Route(RELAY_PREFIX + "/{backend}/{path:path}", relay, methods=["GET", "POST"])]
