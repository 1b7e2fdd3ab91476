"""The OpenAI-compatible routes: models, chat completions, completions, embeddings."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from verbund.accounting import UsageRecord
from verbund.errors import ApiError, BadRequest, ModelNotFound
from verbund.gateway._auth import Principal, authenticate
from verbund.gateway._body import (
    check_chat,
    check_common,
    check_completion,
    check_embedding,
    parse_object,
    read_body,
    require_model,
)
from verbund.gateway._catalogue import catalogue
from verbund.gateway._forward import Forward, until_disconnect
from verbund.gateway._services import Services
from verbund.policy import DATA_CLASS_HEADER, RequestPolicy, request_data_class
from verbund.routing import RouteContext
from verbund.telemetry._tracing import span
from verbund.tenancy import quota_limits


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


PRIORITY_HEADER = "x-verbund-priority"


AFFINITY_MIN_CHARS = 2000  # a single prompt this long (a document) is worth caching


def affinity_key(model: str, body: dict[str, Any]) -> str:
    """What stays the same for a whole conversation: the system prompt and first user turn.

    Engines cache the key-value state of prompt prefixes; sending every turn of a
    conversation to the same backend lets them reuse it. A short one-off question has no
    prefix worth keeping, and pinning it would only cost balance: no key ("").
    """
    messages = body.get("messages")
    if isinstance(messages, list):
        head = []
        for m in messages:
            head.append(m)
            if isinstance(m, dict) and m.get("role") == "user":
                break
        seed = orjson.dumps([model, head])
        if len(messages) == 1 and len(seed) < AFFINITY_MIN_CHARS:
            return ""
    elif isinstance(body.get("prompt"), str) and len(body["prompt"]) >= AFFINITY_MIN_CHARS:
        seed = orjson.dumps([model, body["prompt"][:AFFINITY_MIN_CHARS]])
    else:
        return ""
    return hashlib.blake2b(seed, digest_size=12).hexdigest()


def estimate_prompt_tokens(body: dict[str, Any]) -> int:
    """About four characters a token, plus a few per message for the chat template.

    Only used when a backend streams without reporting usage; such records are flagged
    ``usage_estimated``.
    """
    chars = 0
    messages = body.get("messages")
    if isinstance(messages, list):
        for m in messages:
            content = m.get("content") if isinstance(m, dict) else None
            if isinstance(content, str):
                chars += len(content)
            elif isinstance(content, list):
                chars += sum(
                    len(p.get("text", ""))
                    for p in content
                    if isinstance(p, dict) and isinstance(p.get("text"), str)
                )
        return chars // 4 + 4 * len(messages)
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return len(prompt) // 4 + 1
    if isinstance(prompt, list):
        return sum(len(p) // 4 + 1 if isinstance(p, str) else 1 for p in prompt)
    return 0


def _visible_models(svc: Services, principal: Principal) -> list[dict[str, Any]]:
    policy = RequestPolicy.for_institution(
        principal.institution, principal.institution.default_data_class
    )
    out = catalogue(svc.federation, policy, created=int(svc.started))
    out += svc.jobs.models.entries(principal.institution.id)  # its own ft: models (issue 9)
    return out


async def list_models(request: Request) -> Response:
    svc = services(request)
    principal = await authenticate(request, svc)
    return JSONResponse({"object": "list", "data": _visible_models(svc, principal)})


async def get_model(request: Request) -> Response:
    svc = services(request)
    principal = await authenticate(request, svc)
    name = request.path_params["model"]
    for m in _visible_models(svc, principal):
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
    async def handler(request: Request) -> Response:
        svc = services(request)
        request_id: str = request.state.request_id
        with span(svc.tracer, "verbund.auth"):
            principal = await authenticate(request, svc)
        raw = await read_body(request, svc.config.limits.max_body_bytes)
        body = parse_object(raw)
        model = require_model(body)
        check_common(body)
        check(body, svc)
        check_kind(svc, model, endpoint, kinds)
        stream = streams and body.get("stream") is True
        data_class = request_data_class(
            principal.institution.default_data_class, request.headers.get(DATA_CLASS_HEADER)
        )
        inst = principal.institution
        record = UsageRecord(
            request_id=request_id,
            access_point=svc.config.gateway.name,
            institution_id=inst.id,
            key_id=principal.key_id,
            endpoint=endpoint,
            # a name the federation does not know is client text: never store it
            model=model if model in svc.federation.models else "unknown",
            stream=stream,
        )
        priority = request.headers.get(PRIORITY_HEADER, "interactive")
        if priority not in ("interactive", "batch"):
            raise BadRequest(
                "X-Verbund-Priority must be interactive or batch.",
                code="invalid_priority",
                param="X-Verbund-Priority",
            )
        record.priority = priority
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        ctx = RouteContext(
            home_site=svc.federation.home_site,
            home_region=inst.home_region,
            affinity_key=affinity_key(model, body),
            max_tokens=max_tokens if isinstance(max_tokens, int) else None,
            priority=priority,
        )
        prompt_estimate = estimate_prompt_tokens(body)
        budget_headers = svc.budgets.check(inst)  # before admit: a refusal holds no quota
        reservation = await svc.quotas.admit(
            request_id,
            quota_limits(inst, principal.key),
            prompt_estimate + (ctx.max_tokens or svc.config.routing.default_max_tokens),
        )
        if isinstance(body.get("user"), str) and body["user"]:
            record.user_hash = svc.pseudonyms(body["user"])
        try:
            with span(svc.tracer, "verbund.route", {"verbund.model": record.model}):
                plan = svc.router.plan(model, RequestPolicy.for_institution(inst, data_class), ctx)
        except ApiError as exc:
            record.status, record.http_status = "rejected", exc.status
            svc.on_usage(record)
            raise
        drop_usage = False
        if stream:
            opts = body.get("stream_options") or {}
            if not opts.get("include_usage"):
                body["stream_options"] = {**opts, "include_usage": True}
                drop_usage = True
                raw = orjson.dumps(body)
        response = await svc.proxy.forward(
            Forward(
                path=endpoint,
                body=raw,
                stream=stream,
                drop_usage_chunk=drop_usage,
                plan=plan,
                record=record,
                ctx=ctx,
                prompt_estimate=prompt_estimate,
                parsed=body if stream else None,
                client_gone=until_disconnect(request.receive),
            )
        )
        response.headers.update(reservation.headers)
        response.headers.update(budget_headers)
        return response

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
