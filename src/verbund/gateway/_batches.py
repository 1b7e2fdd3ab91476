"""The Batch API routes: create, list, get, cancel; scoped to the caller's institution."""

from __future__ import annotations

import contextlib
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from verbund.batch import parse_create
from verbund.errors import BadRequest, NoBackendAvailable
from verbund.gateway._auth import authenticate
from verbund.gateway._body import (
    check_chat,
    check_common,
    check_completion,
    check_embedding,
    parse_object,
    read_body,
    require_model,
)
from verbund.gateway._files import query_int
from verbund.gateway._openai import services
from verbund.gateway._services import Services
from verbund.policy import DATA_CLASS_HEADER, RequestPolicy, request_data_class
from verbund.routing import RouteContext

_MODEL_KINDS = {
    "/v1/chat/completions": ("chat", "completion"),
    "/v1/completions": ("chat", "completion"),
    "/v1/embeddings": ("embedding",),
}


def _body_check(svc: Services, endpoint: str) -> Any:
    def check(body: dict[str, Any]) -> str:
        model = require_model(body)
        check_common(body)
        if endpoint == "/v1/chat/completions":
            check_chat(body, svc.config.limits.max_messages)
        elif endpoint == "/v1/completions":
            check_completion(body)
        else:
            check_embedding(body)
        return model

    return check


async def create_batch(request: Request) -> Response:
    svc = services(request)
    principal = await authenticate(request, svc)
    body = parse_object(await read_body(request, svc.config.limits.max_body_bytes))
    inst = principal.institution
    data_class = request_data_class(inst.default_data_class, request.headers.get(DATA_CLASS_HEADER))
    req = parse_create(body, inst.id, principal.key_id, data_class.value)
    policy = RequestPolicy.for_institution(inst, data_class)
    ctx = RouteContext(home_site=svc.federation.home_site, home_region=inst.home_region)

    def check_model(model: str) -> None:
        # allowed but not available right now is fine: the batch waits
        with contextlib.suppress(NoBackendAvailable):
            svc.router.plan(model, policy, ctx)
        kind = svc.federation.models[model].kind
        if kind not in _MODEL_KINDS[req.endpoint]:
            raise BadRequest(
                f"The model '{model}' is a {kind} model and cannot serve {req.endpoint}.",
                code="invalid_model",
                param="model",
            )

    batch = await svc.batches.create(req, _body_check(svc, req.endpoint), check_model)
    return JSONResponse(batch)


async def list_batches(request: Request) -> Response:
    svc = services(request)
    principal = await authenticate(request, svc)
    page = await svc.batches.list(
        principal.institution.id,
        after=request.query_params.get("after") or None,
        limit=query_int(request, "limit", 20, 1, 100),
    )
    return JSONResponse(page)


async def get_batch(request: Request) -> Response:
    svc = services(request)
    principal = await authenticate(request, svc)
    return JSONResponse(
        await svc.batches.get(principal.institution.id, request.path_params["batch_id"])
    )


async def cancel_batch(request: Request) -> Response:
    svc = services(request)
    principal = await authenticate(request, svc)
    return JSONResponse(
        await svc.batches.cancel(principal.institution.id, request.path_params["batch_id"])
    )
