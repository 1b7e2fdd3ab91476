"""The OpenAI-compatible routes: models, chat completions, completions, embeddings.

The OpenAI ``user`` field (an institution's id for its end user) reaches the sites, which
may be other institutions' computing centres, only as the keyed pseudonym the access logs
use: a site can still tell users apart and report abuse in terms the federation can
trace back, but learns no one's identity.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from verbund.admission import Ask, Entry, affinity_key, estimate_prompt_tokens, max_tokens
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
    principal,
    priority,
    request_id,
    services,
)
from verbund.gateway._keepalive import ColdStream
from verbund.gateway._services import Services
from verbund.policy import RequestPolicy
from verbund.proxy import until_disconnect
from verbund.routing import RouteContext
from verbund.telemetry._tracing import span
from verbund.tenancy import Principal


def _visible_models(svc: Services, who: Principal) -> list[dict[str, Any]]:
    policy = RequestPolicy.for_institution(who.institution, who.institution.default_data_class)
    out = catalogue(svc.federation, policy, created=int(svc.started))
    out += svc.jobs.models.entries(who.institution.id)  # its own ft: models (issue 9)
    return out


async def list_models(request: Request) -> Response:
    who = await principal(request)
    return JSONResponse({"object": "list", "data": _visible_models(services(request), who)})


async def get_model(request: Request) -> Response:
    who = await principal(request)
    name = request.path_params["model"]
    for m in _visible_models(services(request), who):
        if m["id"] == name:
            return JSONResponse(m)
    raise ModelNotFound(f"The model '{name}' does not exist.", param="model")


def check_kind(svc: Services, model: str, endpoint: str, kinds: frozenset[str]) -> None:
    """A model of another kind (an OIP model on /v1, a chat model on /v1/embeddings) is 400."""
    config = svc.federation.models.get(model)
    if config is None or config.kind in kinds:
        return  # unknown models are the router's 404
    hint = (
        f"use POST /v2/models/{model}/infer"
        if config.kind == "oip"
        else f"it cannot serve {endpoint}"
    )
    raise BadRequest(
        f"The model '{model}' is a {config.kind} model; {hint}.",
        code="unsupported_model",
        param="model",
    )


def _make_handler(
    endpoint: str,
    check: Callable[[dict[str, Any], Services], None],
    streams: bool,
    kinds: frozenset[str],
) -> Callable[[Request], Any]:
    def checked(request: Request, svc: Services, body: dict[str, Any]) -> str:
        model = require_model(body)
        check_common(body, svc.config.limits, context_length(svc.federation.models, model))
        check(body, svc)
        check_kind(svc, model, endpoint, kinds)
        return model

    async def handler(request: Request) -> Response:
        svc = services(request)
        with span(svc.telemetry.tracer, "verbund.auth"):
            who = await principal(request)
        async with svc.admission.enter(who, endpoint, request_id(request)) as entry:
            raw, body = await json_body(request)
            model = checked(request, svc, body)
            policy = RequestPolicy.for_institution(who.institution, data_class(request, who))
            stream = streams and body.get("stream") is True
            if stream and svc.cold_start.cold(model, policy):
                # the model must start first: keep-alive comments while it does, then the
                # answer in the same stream (bad input was refused above, with its 4xx)
                later = entry.detach()

                async def serve_later() -> Response:
                    with later.owned():
                        return await serve(request, svc, later, raw, body, model, stream)

                return ColdStream(
                    lambda: svc.cold_start.ensure(model, policy),
                    serve_later,
                    svc.config.routing.keepalive_seconds,
                )
            await svc.cold_start.ensure(model, policy)
            return await serve(request, svc, entry, raw, body, model, stream)

    async def serve(
        request: Request,
        svc: Services,
        entry: Entry,
        raw: bytes,
        body: dict[str, Any],
        model: str,
        stream: bool,
    ) -> Response:
        """Admission, routing and the proxy for a request whose model can serve now."""
        who = entry.who
        limit = max_tokens(body)
        urgency = priority(request)
        prompt_estimate = estimate_prompt_tokens(body)
        admitted = await entry.admit(
            Ask(
                model=model,
                data_class=data_class(request, who),
                tokens=prompt_estimate + (limit or svc.config.routing.default_max_tokens),
                route=RouteContext(
                    home_site=svc.federation.home_site,
                    home_region=who.institution.home_region,
                    affinity_key=affinity_key(model, body),
                    max_tokens=limit,
                    priority=urgency,
                ),
                stream=stream,
                priority=urgency,
                user=body["user"] if isinstance(body.get("user"), str) else "",
            )
        )
        drop_usage = False
        rewrite = False
        if admitted.record.user_hash:
            # sites see the keyed pseudonym the logs use, never the institution's own id
            body["user"] = admitted.record.user_hash
            rewrite = True
        if stream:
            opts = body.get("stream_options") or {}
            if not opts.get("include_usage"):
                body["stream_options"] = {**opts, "include_usage": True}
                drop_usage = rewrite = True
        if rewrite:
            raw = orjson.dumps(body)
        response = await svc.proxy.forward(
            admitted.forward(
                endpoint,
                raw,
                stream=stream,
                drop_usage_chunk=drop_usage,
                prompt_estimate=prompt_estimate,
                parsed=body if stream else None,
                client_gone=until_disconnect(request.receive),
            )
        )
        return admitted.respond(response)

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
