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

What the relay serves, the site meters itself (:mod:`verbund.agent._meter`): the
institution the access point names (``X-Verbund-Institution``), the model asked for and
the usage the backend reports, a stream's included. A request the access point marks
``X-Verbund-Receipt: required`` gets a receipt signed with the site's key over what this
agent served (docs/trust.md): as the ``X-Verbund-Receipt`` header of an answer, and for
a stream as an SSE comment after ``data: [DONE]`` (``: x-verbund-receipt <value>``),
which every SSE client skips. A site without a key refuses such a request (503) before
the backend is called; a receipt is only ever signed here, for an answer that came
through here.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from verbund.agent._auth import Role, require
from verbund.agent._blobs import check_class
from verbund.agent._meter import Metered
from verbund.agent._services import AgentServices
from verbund.config import SiteState
from verbund.errors import (
    NoBackendAvailable,
    NotFound,
    UpstreamError,
    UpstreamTimeout,
)
from verbund.federation import (
    INSTITUTION_HEADER,
    RECEIPT_HEADER,
    RELAY_PREFIX,
    UpstreamFailed,
    UpstreamResponse,
    UpstreamTimedOut,
)
from verbund.policy import DATA_CLASS_HEADER
from verbund.proxy import SSEUsageFilter, Usage
from verbund.trust import Receipt, sign_receipt

__all__ = ["routes"]

_PATHS = ("v1/", "v2/", "health")
_REQUEST_HEADERS = frozenset(
    {
        "content-type",
        "accept",
        "x-request-id",
        "traceparent",
        "tracestate",
        "inference-header-content-length",  # OIP's binary tensors: where the JSON ends
    }
)
# OIP v2 names the model in the path (/v2/models/<name>[/versions/<v>]/infer), not the body
_OIP_MODEL = re.compile(r"^v2/models/([^/?]+)")
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


Finish = Callable[[Usage | None, bool], Coroutine[Any, Any, str]]


async def _metered(resp: UpstreamResponse, finish: Finish) -> AsyncIterator[bytes]:
    """A stream passed on unchanged, watched for its usage; metered when it ends, and
    its receipt (if one was asked for) sent after its ``[DONE]``."""
    sse = SSEUsageFilter(drop_usage_chunk=False)
    metered = False
    try:
        async for chunk in resp.chunks():
            sse.feed(chunk)
            yield chunk
        sse.tail()
        metered = True
        receipt = await finish(sse.usage, sse.done)
        if receipt:
            yield f": {RECEIPT_HEADER} {receipt}\n\n".encode()
    except UpstreamFailed:
        return  # the stream ends short; the access point sees it as the backend's failure
    finally:
        await resp.aclose()
        if not metered:  # broken or abandoned: what it served so far still counts
            with contextlib.suppress(Exception):
                await finish(sse.usage, False)


def _model_of(body: bytes) -> str:
    with contextlib.suppress(orjson.JSONDecodeError, AttributeError):
        model = orjson.loads(body).get("model")
        if isinstance(model, str):
            return model[:128]
    return ""


async def relay(request: Request) -> Response:
    caller = require(request, Role.access_point)
    svc: AgentServices = request.app.state.services
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
    receipt_asked = request.headers.get(RECEIPT_HEADER, "").strip().lower() == "required"
    body = b""
    if request.method == "POST":
        data_class = check_class(request.headers.get(DATA_CLASS_HEADER, ""), svc)
        if receipt_asked and svc.signing is None:
            raise NoBackendAvailable(
                f"Site {svc.site} cannot sign receipts (no signing key).",
                code="receipt_unavailable",
            )
        body = await request.body()
    try:
        if request.method == "POST":
            resp = await upstream.post(target, body, headers, read_timeout=read_timeout)
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
    # only this agent signs for this site: a backend's own receipt header is dropped
    out_headers = {
        k: v for k, v in resp.headers.items() if k.lower() not in _HOP | {RECEIPT_HEADER}
    }
    if request.method != "POST" or resp.status != 200:
        return StreamingResponse(_chunks(resp), status_code=resp.status, headers=out_headers)
    oip = _OIP_MODEL.match(path)
    model = oip.group(1)[:128] if oip else _model_of(body)
    request_id = request.headers.get("x-request-id", "")
    stream = "text/event-stream" in resp.headers.get("content-type", "")

    async def finish(usage: Usage | None, complete: bool) -> str:
        """Meter what was served; the receipt for it, if one was asked for."""
        svc.meter.record(
            Metered(
                request_id=request_id,
                access_point=caller.name,
                institution=request.headers.get(INSTITUTION_HEADER, ""),
                endpoint="/" + path.split("?", 1)[0],
                model=model,
                backend=name,
                usage=usage,
                stream=stream,
                complete=complete,
            )
        )
        if not receipt_asked or svc.signing is None or not complete:
            return ""
        u = usage or Usage()
        receipt = Receipt(
            request_id=request_id,
            site=svc.site,
            jurisdiction=svc.config.site.jurisdiction,
            data_class=data_class.value,
            model=model,
            prompt_tokens=u.prompt_tokens,
            completion_tokens=u.completion_tokens,
            ts=time.time(),
        )
        return sign_receipt(svc.signing, receipt).encode()

    if stream:
        return StreamingResponse(
            _metered(resp, finish), status_code=resp.status, headers=out_headers
        )
    try:
        answer = await resp.read()
    except UpstreamFailed:
        if instance is None:
            offer.prober.suspect(backend)
        raise UpstreamError(f"Backend '{name}' broke off its answer.") from None
    finally:
        await resp.aclose()
    usage = None
    with contextlib.suppress(orjson.JSONDecodeError):
        usage = Usage.from_body(orjson.loads(answer))
    receipt = await finish(usage, True)
    if receipt:
        out_headers[RECEIPT_HEADER] = receipt
    return Response(answer, status_code=200, headers=out_headers)


def routes() -> list[BaseRoute]:
    return [Route(RELAY_PREFIX + "/{backend}/{path:path}", relay, methods=["GET", "POST"])]
