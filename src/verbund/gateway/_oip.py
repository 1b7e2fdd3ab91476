"""Open Inference Protocol v2 at the access point: domain models (scikit-learn, ONNX, ...).

The routes take the same keys, data policy, routing, health and failover as the OpenAI
routes and forward to backends of ``kind = "oip"`` (MLServer, Triton, KServe), which
serve each model under its public name. Errors use the protocol's shape,
``{"error": "<message>"}``: every :class:`ApiError` raised on the way (by the key check,
the body check, the router or the proxy) is converted here.

Usage: one record per inference, with ``endpoint = "/v2/infer"`` (for site models and
``ft:`` models alike), no tokens, and the sizes of the request and answer bodies.
Inference goes through the same admission as the OpenAI routes; model metadata through
the same failover loop, but it spends no capacity and leaves no usage record.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Awaitable, Callable

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route

from verbund import __version__
from verbund.admission import Ask
from verbund.errors import (
    ApiError,
    BadRequest,
    ModelNotFound,
    NoBackendAvailable,
    NotFound,
    UpstreamError,
)
from verbund.federation import RECEIPT_HEADER, Backend
from verbund.gateway._body import read_body
from verbund.gateway._catalogue import model_card
from verbund.gateway._deps import (
    data_class,
    principal,
    receipt_required,
    request_id,
    services,
)
from verbund.gateway._inference import kind_phrase
from verbund.gateway._oip_body import (
    HEADER_LENGTH,
    check_against_model,
    check_infer_request,
    parse_infer_body,
)
from verbund.gateway._services import Services
from verbund.policy import RequestPolicy
from verbund.proxy import until_disconnect
from verbund.routing import RouteContext
from verbund.tenancy import Principal

__all__ = ["INFER_ENDPOINT", "routes"]

INFER_ENDPOINT = "/v2/infer"
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

Handler = Callable[[Request], Awaitable[Response]]


def oip_error(exc: ApiError) -> Response:
    return JSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers)


def _oip_errors(handler: Handler) -> Handler:
    """Answer every ApiError of ``handler`` in the protocol's error shape."""

    @functools.wraps(handler)
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except ApiError as exc:
            return oip_error(exc)

    return wrapped


def _target(request: Request, svc: Services) -> tuple[str, str]:
    """The model and version the path names; the model must be an OIP model."""
    name: str = request.path_params["name"]
    version: str = request.path_params.get("version", "")
    model = svc.federation.models.get(name)
    if model is None:
        raise ModelNotFound(f"The model '{name}' does not exist.", param="model")
    if model.kind != "oip":
        raise BadRequest(
            f"The model '{name}' is {kind_phrase(model.kind)} model; "
            "use the OpenAI routes under /v1.",
            code="unsupported_model",
            param="model",
        )
    if version and not _VERSION.match(version):
        raise BadRequest("The model version in the path is malformed.", param="version")
    return name, version


def _backend_path(name: str, version: str, suffix: str = "") -> str:
    return f"/v2/models/{name}" + (f"/versions/{version}" if version else "") + suffix


def _route(svc: Services, who: Principal, receipt: bool = False) -> RouteContext:
    return RouteContext(
        home_site=svc.federation.home_site,
        home_region=who.institution.home_region,
        receipt=receipt,
    )


def _plan(svc: Services, who: Principal, model: str, request: Request) -> list[Backend]:
    policy = RequestPolicy.for_institution(who.institution, data_class(request, who))
    return svc.router.plan(model, policy, _route(svc, who))


def _site_headers(backend: Backend, request: Request) -> dict[str, str]:
    return {"x-verbund-site": backend.site.name, "x-request-id": request_id(request)}


async def server_metadata(request: Request) -> Response:
    return JSONResponse({"name": "verbund", "version": __version__, "extensions": []})


async def health_live(request: Request) -> Response:
    return JSONResponse({"live": True})


async def health_ready(request: Request) -> Response:
    """Ready when some OIP model has an available backend at an active site."""
    svc = services(request)
    now = time.monotonic()
    ready = any(
        b.kind == "oip" and b.site.accepts_new_requests and b.available(now)
        for b in svc.federation.backends.values()
    )
    # the protocol: 200 means true, a 4xx means false
    return JSONResponse({"ready": ready}, status_code=200 if ready else 400)


@_oip_errors
async def model_ready(request: Request) -> Response:
    """The federation's answer: may this caller's request be served by some backend now?"""
    svc = services(request)
    who = await principal(request)
    name, _ = _target(request, svc)
    try:
        plan = _plan(svc, who, name, request)
    except NoBackendAvailable:
        plan = []
    # a panic plan (routing.panic_threshold) also holds backends that look unhealthy
    now = time.monotonic()
    if not any(b.available(now) for b in plan):
        return JSONResponse({"name": name, "ready": False}, status_code=400)
    return JSONResponse({"name": name, "ready": True})


@_oip_errors
async def model_metadata(request: Request) -> Response:
    """The model's inputs and outputs, as a backend that serves it describes them."""
    svc = services(request)
    who = await principal(request)
    name, version = _target(request, svc)
    plan = _plan(svc, who, name, request)
    answer = await svc.proxy.fetch(plan, _backend_path(name, version), request_id(request))
    headers = _site_headers(answer.backend, request)
    try:
        metadata = orjson.loads(answer.body)
    except orjson.JSONDecodeError:
        metadata = None
    if not isinstance(metadata, dict):
        raise UpstreamError("The model server's metadata was not a JSON object.")
    # the catalogue's model card beside what the model server says of its tensors
    metadata["verbund"] = model_card(svc.federation.models[name], svc.federation.models)
    return JSONResponse(metadata, headers=headers)


@_oip_errors
async def infer(request: Request) -> Response:
    svc = services(request)
    who = await principal(request)
    name, version = _target(request, svc)
    model = svc.federation.models[name]
    limits = svc.config.limits
    async with svc.admission.enter(who, INFER_ENDPOINT, request_id(request)) as entry:
        raw = await read_body(request, model.max_request_bytes or limits.max_body_bytes)
        header_length = request.headers.get(HEADER_LENGTH)
        body, binary_bytes = parse_infer_body(raw, header_length, limits.max_json_depth)
        check_infer_request(body, binary_bytes)
        check_against_model(body, model)
        ask = Ask(
            model=name,
            data_class=data_class(request, who),
            route=_route(svc, who, receipt_required(request, who)),
            request_bytes=len(raw),
        )
        admitted = await entry.admit(ask)
        fwd = admitted.forward(
            _backend_path(name, version, "/infer"),
            raw,
            client_gone=until_disconnect(request.receive),
        )
        if header_length is not None:  # binary tensors: the body goes through unchanged
            fwd.headers = {"content-type": "application/octet-stream", HEADER_LENGTH: header_length}
        answer = await svc.proxy.call(fwd)
        admitted.record.response_bytes = len(answer.body)
        headers = _site_headers(answer.backend, request)
        if HEADER_LENGTH in answer.headers:
            headers[HEADER_LENGTH] = answer.headers[HEADER_LENGTH]
        receipt = answer.headers.get(RECEIPT_HEADER)
        if receipt and answer.backend.site.config.ingress == "agent":
            # signed by the agent of the site that served it; never from a model server
            headers[RECEIPT_HEADER] = receipt
        binary = "application/octet-stream" if HEADER_LENGTH in headers else "application/json"
        media = answer.headers.get("content-type", binary)
        return admitted.respond(Response(answer.body, media_type=media, headers=headers))


async def _not_found(request: Request) -> Response:
    return oip_error(NotFound(f"No route {request.url.path}."))


def _fallback(known: list[Route]) -> Handler:
    """Unknown /v2 paths: 404, or 405 where the path exists for other methods."""

    async def fallback(request: Request) -> Response:
        for route in known:
            match, _ = route.matches(request.scope)
            if match is Match.PARTIAL:
                err = ApiError(f"Method {request.method} is not allowed here.")
                err.status = 405
                return oip_error(err)
        return await _not_found(request)

    return fallback


def routes() -> list[Route]:
    """The OIP v2 routes, each also under ``/versions/{version}``, and a /v2 fallback."""
    model, versioned = "/v2/models/{name}", "/v2/models/{name}/versions/{version}"
    known = [
        Route("/v2", server_metadata, methods=["GET"]),
        Route("/v2/health/live", health_live, methods=["GET"]),
        Route("/v2/health/ready", health_ready, methods=["GET"]),
        Route(model, model_metadata, methods=["GET"]),
        Route(versioned, model_metadata, methods=["GET"]),
        Route(model + "/ready", model_ready, methods=["GET"]),
        Route(versioned + "/ready", model_ready, methods=["GET"]),
        Route(model + "/infer", infer, methods=["POST"]),
        Route(versioned + "/infer", infer, methods=["POST"]),
    ]
    every_method = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    return [*known, Route("/v2/{path:path}", _fallback(known), methods=every_method)]
