"""The OpenAI-compatible routes: models, chat completions, completions, embeddings.

The OpenAI ``user`` field (an institution's id for its end user) reaches the sites, which
may be other institutions' computing centres, only as the keyed pseudonym the access logs
use: a site can still tell users apart and report abuse in terms the federation can
trace back, but learns no one's identity.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from verbund.admission import Entry
from verbund.errors import BadRequest, ModelNotFound
from verbund.gateway._body import (
    check_chat,
    check_common,
    check_completion,
    check_embedding,
    context_length,
    require_model,
)
from verbund.gateway._catalogue import catalogue
from verbund.gateway._deps import (
    data_class,
    json_body,
    person,
    principal,
    request_id,
    services,
)
from verbund.gateway._inference import admit_body, check_kind, send
from verbund.gateway._keepalive import ColdStream
from verbund.gateway._services import Services
from verbund.policy import RequestPolicy
from verbund.telemetry._tracing import span
from verbund.tenancy import Principal

_KINDS = frozenset({"chat", "completion", "embedding", "oip"})


def _kinds(request: Request, who: Principal) -> frozenset[str]:
    """The kinds to list: ``?kind=chat,embedding``, else the key's ``model_kinds``."""
    asked = request.query_params.get("kind")
    if asked:
        kinds = frozenset(k.strip() for k in asked.split(",") if k.strip())
        unknown = sorted(kinds - _KINDS)
        if unknown:
            raise BadRequest(
                f"'kind' must be one or more of {', '.join(sorted(_KINDS))}.",
                code="invalid_value",
                param="kind",
            )
        return kinds
    return frozenset(who.key.model_kinds)


def _visible_models(request: Request, svc: Services, who: Principal) -> list[dict[str, Any]]:
    policy = RequestPolicy.for_institution(who.institution, data_class(request, who))
    kinds = _kinds(request, who)
    inst = who.institution.id
    out = [
        entry
        for entry in catalogue(svc.federation, policy, created=int(svc.started), kinds=kinds)
        if not (reserved := svc.federation.models[entry["id"]].institutions) or inst in reserved
    ]
    if not kinds or "chat" in kinds:
        out += svc.jobs.models.entries(inst)  # its own ft: models served here (OIP)
    return out


async def list_models(request: Request) -> Response:
    who = await principal(request)
    return JSONResponse(
        {"object": "list", "data": _visible_models(request, services(request), who)}
    )


async def get_model(request: Request) -> Response:
    who = await principal(request)
    name = request.path_params["model"]
    for m in _visible_models(request, services(request), who):
        if m["id"] == name:
            return JSONResponse(m)
    raise ModelNotFound(f"The model '{name}' does not exist.", param="model")


def _make_handler(
    endpoint: str,
    check: Callable[[dict[str, Any], Services], None],
    streams: bool,
    kinds: frozenset[str],
) -> Callable[[Request], Any]:
    async def handler(request: Request) -> Response:
        svc = services(request)
        with span(svc.telemetry.tracer, "verbund.auth"):
            who = await principal(request)
        async with svc.admission.enter(
            who, endpoint, request_id(request), person(request, who)
        ) as entry:
            raw, body = await json_body(request)
            model = require_model(body)
            check_common(body, svc.config.limits, context_length(svc.federation.models, model))
            check(body, svc)
            check_kind(svc, model, endpoint, kinds)
            stream = streams and body.get("stream") is True
            if stream and svc.cold_start.starts(model):  # an on-demand model: cold?
                policy = RequestPolicy.for_institution(who.institution, data_class(request, who))
                if svc.cold_start.cold(model, policy):
                    # the model must start first: keep-alive comments while it does, then
                    # the answer in the same stream (bad input was refused above, with its 4xx)
                    later = entry.detach()

                    async def serve_later() -> Response:
                        with later.owned():
                            return await serve(request, later, model, body, raw, stream)

                    return ColdStream(
                        lambda: svc.cold_start.ensure(model, policy),
                        serve_later,
                        svc.config.routing.keepalive_seconds,
                    )
            return await serve(request, entry, model, body, raw, stream)

    async def serve(
        request: Request,
        entry: Entry,
        model: str,
        body: dict[str, Any],
        raw: bytes,
        stream: bool,
    ) -> Response:
        admitted = await admit_body(request, entry, model, body, raw, stream=stream)
        response = await send(request, endpoint, admitted)
        return admitted.admission.respond(response)

    return handler


chat_completions = _make_handler(
    "/v1/chat/completions",
    lambda body, svc: check_chat(body, svc.config.limits.max_messages),
    streams=True,
    kinds=frozenset({"chat"}),
)
completions = _make_handler(
    "/v1/completions",
    lambda body, svc: check_completion(body),
    streams=True,
    kinds=frozenset({"chat", "completion"}),
)
embeddings = _make_handler(
    "/v1/embeddings",
    lambda body, svc: check_embedding(body),
    streams=False,
    kinds=frozenset({"embedding"}),
)
