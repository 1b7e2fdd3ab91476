"""The Batch API routes: create, list, get, cancel; scoped to the caller's institution."""

from __future__ import annotations

import contextlib
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from verbund.admission import Ask
from verbund.batch import oip_model, parse_create
from verbund.errors import BadRequest, ModelNotFound, NoBackendAvailable
from verbund.gateway._body import (
    check_chat,
    check_common,
    check_completion,
    check_embedding,
    context_length,
    nested_deeper,
    require_model,
    too_deep,
)
from verbund.gateway._deps import (
    data_class,
    json_body,
    principal,
    query_int,
    request_id,
    services,
)
from verbund.gateway._inference import kind_phrase
from verbund.gateway._oip_body import check_against_model, check_infer_request
from verbund.gateway._services import Services
from verbund.policy import RequestPolicy
from verbund.routing import RouteContext

BATCHES_ENDPOINT = "/v1/batches"

_MODEL_KINDS = {
    "/v1/chat/completions": ("chat", "completion"),
    "/v1/completions": ("chat", "completion"),
    "/v1/embeddings": ("embedding",),
}


def _body_check(svc: Services, endpoint: str) -> Any:
    oip = oip_model(endpoint)
    if oip is not None:
        return _oip_body_check(svc, oip)

    def check(body: dict[str, Any]) -> str:
        if nested_deeper(body, svc.config.limits.max_json_depth):
            raise too_deep(svc.config.limits.max_json_depth)
        model = require_model(body)
        check_common(body, svc.config.limits, context_length(svc.federation.models, model))
        if endpoint == "/v1/chat/completions":
            check_chat(body, svc.config.limits.max_messages)
        elif endpoint == "/v1/completions":
            check_completion(body)
        else:
            check_embedding(body)
        return model

    return check


def _oip_body_check(svc: Services, name: str) -> Any:
    """A line of an OIP batch: an inference request for the endpoint's model, checked as an
    interactive one is (tensors in JSON; a line cannot carry binary data)."""
    model = svc.federation.models.get(name)

    def check(body: dict[str, Any]) -> str:
        if model is None:
            raise ModelNotFound(f"The model '{name}' does not exist.", param="model")
        if nested_deeper(body, svc.config.limits.max_json_depth):
            raise too_deep(svc.config.limits.max_json_depth)
        check_infer_request(body)
        check_against_model(body, model)
        return name

    return check


async def create_batch(request: Request) -> Response:
    """Admitted like one request (budget, requests per minute); its items are charged
    against the token quotas as they run (:class:`verbund.admission.BatchDispatch`)."""
    svc = services(request)
    who = await principal(request)
    async with svc.admission.enter(who, BATCHES_ENDPOINT, request_id(request)) as entry:
        _, body = await json_body(request)
        inst = who.institution
        klass = data_class(request, who)
        req = parse_create(body, inst.id, who.key_id, klass.value)
        policy = RequestPolicy.for_institution(inst, klass)
        ctx = RouteContext(home_site=svc.federation.home_site, home_region=inst.home_region)

        def check_model(model: str) -> None:
            if not svc.federation.visible(model, inst.id):  # another institution's own
                raise ModelNotFound(f"The model '{model}' does not exist.", param="model")
            # allowed but not available right now is fine: the batch waits
            with contextlib.suppress(NoBackendAvailable):
                svc.router.plan(model, policy, ctx)
            kind = svc.federation.models[model].kind
            kinds = ("oip",) if oip_model(req.endpoint) else _MODEL_KINDS[req.endpoint]
            if kind not in kinds:
                raise BadRequest(
                    f"The model '{model}' is {kind_phrase(kind)} model and cannot serve "
                    f"{req.endpoint}.",
                    code="invalid_model",
                    param="model",
                )

        admitted = await entry.admit(Ask(model="", data_class=klass))
        batch = await svc.batches.create(req, _body_check(svc, req.endpoint), check_model)
        return admitted.respond(JSONResponse(batch))


async def list_batches(request: Request) -> Response:
    svc = services(request)
    who = await principal(request)
    page = await svc.batches.list(
        who.institution.id,
        after=request.query_params.get("after") or None,
        limit=query_int(request, "limit", 20, 1, 100),
    )
    return JSONResponse(page)


async def get_batch(request: Request) -> Response:
    svc = services(request)
    who = await principal(request)
    return JSONResponse(await svc.batches.get(who.institution.id, request.path_params["batch_id"]))


async def cancel_batch(request: Request) -> Response:
    svc = services(request)
    who = await principal(request)
    return JSONResponse(
        await svc.batches.cancel(who.institution.id, request.path_params["batch_id"])
    )
