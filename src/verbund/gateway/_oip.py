"""Open Inference Protocol v2 at the access point: domain models (scikit-learn, ONNX, ...).

The routes take the same keys, data policy, routing, health and failover as the OpenAI
routes and forward to backends of ``kind = "oip"`` (MLServer, Triton, KServe), which
serve each model under its public name. Errors use the protocol's shape,
``{"error": "<message>"}``: every :class:`ApiError` raised on the way (by the key check,
the body check, the router or the proxy) is converted here.

Usage: one record per inference, with ``endpoint = "/v2/infer"``, no tokens, and the sizes
of the request and answer bodies. The proxy used for inference (``Services.oip_proxy``)
leaves usage to this module, which adds the answer's size before recording it.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Awaitable, Callable

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route

from verbund import __version__
from verbund.accounting import UsageRecord
from verbund.config import DataClass
from verbund.errors import (
    ApiError,
    BadRequest,
    ModelNotFound,
    NoBackendAvailable,
    NotFound,
    UpstreamError,
    UpstreamTimeout,
)
from verbund.federation import Backend, Failure
from verbund.gateway._auth import Principal, authenticate
from verbund.gateway._body import parse_object, read_body
from verbund.gateway._forward import Forward, sanitize_upstream_message, until_disconnect
from verbund.gateway._oip_body import check_infer_request
from verbund.gateway._proxy import RETRYABLE_STATUS
from verbund.gateway._services import Services
from verbund.policy import DATA_CLASS_HEADER, RequestPolicy, request_data_class
from verbund.routing import RouteContext
from verbund.tenancy import quota_limits

__all__ = ["INFER_ENDPOINT", "routes"]

INFER_ENDPOINT = "/v2/infer"
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

Handler = Callable[[Request], Awaitable[Response]]


def _services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


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
            f"The model '{name}' is a {model.kind} model; use the OpenAI routes under /v1.",
            code="unsupported_model",
            param="model",
        )
    if version and not _VERSION.match(version):
        raise BadRequest("The model version in the path is malformed.", param="version")
    return name, version


def _backend_path(name: str, version: str, suffix: str = "") -> str:
    return f"/v2/models/{name}" + (f"/versions/{version}" if version else "") + suffix


def _data_class(request: Request, principal: Principal) -> DataClass:
    default = principal.institution.default_data_class
    return request_data_class(default, request.headers.get(DATA_CLASS_HEADER))


def _plan(svc: Services, principal: Principal, model: str, data_class: DataClass) -> list[Backend]:
    inst = principal.institution
    return svc.router.plan(
        model,
        RequestPolicy.for_institution(inst, data_class),
        RouteContext(home_site=svc.federation.home_site, home_region=inst.home_region),
    )


def _site_headers(backend: Backend, request: Request) -> dict[str, str]:
    return {"x-verbund-site": backend.site.name, "x-request-id": request.state.request_id}


async def server_metadata(request: Request) -> Response:
    return JSONResponse({"name": "verbund", "version": __version__, "extensions": []})


async def health_live(request: Request) -> Response:
    return JSONResponse({"live": True})


async def health_ready(request: Request) -> Response:
    """Ready when some OIP model has an available backend at an active site."""
    svc = _services(request)
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
    svc = _services(request)
    principal = await authenticate(request, svc)
    name, _ = _target(request, svc)
    data_class = _data_class(request, principal)
    try:
        _plan(svc, principal, name, data_class)
    except NoBackendAvailable:
        return JSONResponse({"name": name, "ready": False}, status_code=400)
    return JSONResponse({"name": name, "ready": True})


@_oip_errors
async def model_metadata(request: Request) -> Response:
    """The model's inputs and outputs, as a backend that serves it describes them."""
    svc = _services(request)
    principal = await authenticate(request, svc)
    name, version = _target(request, svc)
    plan = _plan(svc, principal, name, _data_class(request, principal))
    body, backend = await _get_with_failover(svc, plan, _backend_path(name, version))
    return Response(body, media_type="application/json", headers=_site_headers(backend, request))


@_oip_errors
async def infer(request: Request) -> Response:
    svc = _services(request)
    principal = await authenticate(request, svc)
    name, version = _target(request, svc)
    raw = await read_body(request, svc.config.limits.max_body_bytes)
    check_infer_request(parse_object(raw))
    data_class = _data_class(request, principal)
    record = UsageRecord(
        request_id=request.state.request_id,
        access_point=svc.config.gateway.name,
        institution_id=principal.institution.id,
        key_id=principal.key_id,
        endpoint=INFER_ENDPOINT,
        model=name,
        request_bytes=len(raw),
    )
    budget_headers = svc.budgets.check(principal.institution)
    reservation = await svc.quotas.admit(
        record.request_id, quota_limits(principal.institution, principal.key), 0
    )
    try:
        plan = _plan(svc, principal, name, data_class)
    except ApiError as exc:
        record.status, record.http_status = "rejected", exc.status
        svc.on_usage(record)
        raise
    fwd = Forward(
        path=_backend_path(name, version, "/infer"),
        body=raw,
        stream=False,
        drop_usage_chunk=False,
        plan=plan,
        record=record,
        client_gone=until_disconnect(request.receive),
    )
    try:
        answer = await svc.oip_proxy.call(fwd)
    except ApiError:
        svc.on_usage(record)  # the proxy has filled in status, site and latency
        raise
    record.response_bytes = len(answer.body)
    svc.on_usage(record)
    return Response(
        answer.body,
        media_type="application/json",
        headers={
            **_site_headers(answer.backend, request),
            **reservation.headers,
            **budget_headers,
        },
    )


async def _get_with_failover(
    svc: Services, plan: list[Backend], path: str
) -> tuple[bytes, Backend]:
    """A GET along the plan: the next backend on connection errors, timeouts and 5xx."""
    cfg = svc.config.routing
    deadline = time.monotonic() + cfg.request_deadline
    error: ApiError = NoBackendAvailable("No backend could take the request.")
    for backend in plan[: cfg.max_attempts]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        timeout = httpx.Timeout(
            min(cfg.first_byte_timeout, remaining), connect=min(cfg.connect_timeout, remaining)
        )
        try:
            resp = await svc.pool.client(backend).get(path, timeout=timeout)
        except httpx.ConnectError:
            svc.tracker.on_failure(backend, Failure.refused, time.monotonic())
            error = NoBackendAvailable("The model server could not be reached.")
            continue
        except httpx.TimeoutException:
            svc.tracker.on_failure(backend, Failure.timeout, time.monotonic())
            error = UpstreamTimeout("The model server did not answer in time.")
            continue
        except httpx.HTTPError:
            svc.tracker.on_failure(backend, Failure.server_error, time.monotonic())
            error = UpstreamError("The connection to the model server failed.")
            continue
        status = resp.status_code
        if status == 200:
            svc.tracker.on_success(backend)
            return resp.content, backend
        if status in RETRYABLE_STATUS or status >= 500:
            if status != 429:
                svc.tracker.on_failure(backend, Failure.server_error, time.monotonic())
            error = UpstreamError(f"The model server failed (HTTP {status}).")
            continue
        detail = sanitize_upstream_message(resp.content)
        message = "The model server rejected the request" + (f": {detail}" if detail else ".")
        raise NotFound(message) if status == 404 else BadRequest(message, code="upstream_rejected")
    raise error


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
