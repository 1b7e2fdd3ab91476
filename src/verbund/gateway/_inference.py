"""The steps every OpenAI inference route takes once its body is read: the kind check,
admission of what the body asks (tokens, route, the end user's pseudonym) and the
forwarding of the body the backend gets. Chat completions, completions, embeddings and
the Responses API (translated to chat completions) all go through here, so quotas,
policy, routing, failover and usage are the same for each.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from verbund.admission import (
    Admission,
    Ask,
    Entry,
    affinity_key,
    estimate_prompt_tokens,
    max_tokens,
)
from verbund.config import ModelConfig
from verbund.errors import BackendLost, BackendRefused, BadRequest, UpstreamTimeout
from verbund.federation import OPENAI, chat_body_for, streams_unstreamed
from verbund.gateway._deps import (
    data_class,
    person,
    principal,
    priority,
    receipt_required,
    request_id,
    services,
)
from verbund.gateway._services import Services
from verbund.policy import RequestPolicy
from verbund.proxy import stream_of_answer, until_disconnect
from verbund.routing import RouteContext
from verbund.telemetry._tracing import span
from verbund.tenancy import Principal

__all__ = ["Admitted", "admit_body", "check_kind", "enter", "kind_phrase", "known_model", "send"]


_KIND_NAMES = {
    "chat": "a chat",
    "completion": "a completion",
    "embedding": "an embedding",
    "oip": "an Open Inference Protocol (OIP)",
}


def kind_phrase(kind: str) -> str:
    """ "a chat", "an embedding": the kind of a model as error messages name it."""
    return _KIND_NAMES.get(kind, f"a {kind}")


def known_model(svc: Services, who: Principal, model: str) -> ModelConfig | None:
    """The model as the caller may know it: None for a name the federation does not know
    and for a model reserved for other institutions alike (admission's 404 for both), so
    no check before admission tells them apart by its kind or context length."""
    if not svc.federation.visible(model, who.institution.id):
        return None
    return svc.federation.models.get(model)


def check_kind(config: ModelConfig | None, endpoint: str, kinds: frozenset[str]) -> None:
    """A model of another kind (an OIP model on /v1, a chat model on /v1/embeddings) is 400."""
    if config is None or config.kind in kinds:
        return  # unknown models are the router's 404
    hint = (
        f"use POST /v2/models/{config.name}/infer"
        if config.kind == "oip"
        else f"it cannot serve {endpoint}"
    )
    raise BadRequest(
        f"The model '{config.name}' is {kind_phrase(config.kind)} model; {hint}.",
        code="unsupported_model",
        param="model",
    )


@contextlib.asynccontextmanager
async def enter(request: Request, endpoint: str) -> AsyncIterator[Entry]:
    """An inference route's first steps, before its body is read: the caller (traced as
    ``verbund.auth``) and admission's entry, which names the person behind a front-end's
    key (:meth:`verbund.admission.Admitter.enter`)."""
    svc = services(request)
    with span(svc.telemetry.tracer, "verbund.auth"):
        who = await principal(request)
    async with svc.admission.enter(
        who, endpoint, request_id(request), person(request, who)
    ) as entry:
        yield entry


@dataclass(slots=True)
class Admitted:
    """An admitted body, as the backend will get it."""

    admission: Admission
    body: dict[str, Any]
    raw: bytes | None  # the body as the client sent it; None: ``body`` is encoded to send
    stream: bool
    drop_usage: bool
    prompt_estimate: int
    # an on-demand model: what a request needs to wait for a replacement instance
    on_demand: tuple[str, RequestPolicy] | None = None


async def admit_body(
    request: Request,
    entry: Entry,
    model: str,
    body: dict[str, Any],
    raw: bytes | None,
    *,
    stream: bool,
    user: str = "",
    affinity_seed: str = "",
) -> Admitted:
    """Admission for ``body`` (quotas reserve its prompt estimate plus its answer limit);
    the body the backend gets carries the end user's pseudonym and, for a stream, asks
    for usage (dropped again for a client that did not ask). ``raw`` is the body as the
    client sent it, forwarded unchanged when nothing had to change (None: the body is
    encoded once, when :func:`send` knows what the backend gets)."""
    svc = services(request)
    who = entry.who
    asked_class = data_class(request, who)
    on_demand = None
    if svc.cold_start.starts(model):  # not running: started, and waited for (or 503)
        on_demand = (model, RequestPolicy.for_institution(who.institution, asked_class))
        await svc.cold_start.ensure(*on_demand)
    limit = max_tokens(body)
    urgency = priority(request)
    prompt_estimate = estimate_prompt_tokens(body)
    if not user and isinstance(body.get("user"), str):
        user = body["user"]
    if affinity_seed:  # a client's own cache key (Responses' prompt_cache_key)
        key = hashlib.blake2b(orjson.dumps([model, affinity_seed]), digest_size=12).hexdigest()
    else:
        key = affinity_key(model, body)
    admitted = await entry.admit(
        Ask(
            model=model,
            data_class=asked_class,
            tokens=prompt_estimate + (limit or svc.config.routing.default_max_tokens),
            route=RouteContext(
                home_site=svc.federation.home_site,
                home_region=who.institution.home_region,
                affinity_key=key,
                max_tokens=limit,
                priority=urgency,
                receipt=receipt_required(request, who),
            ),
            stream=stream,
            priority=urgency,
            user=user,
        )
    )
    drop_usage = False
    rewrite = raw is None
    if admitted.record.user_hash:
        # sites see the keyed pseudonym the logs use, never the institution's own id
        body["user"] = admitted.record.user_hash
        rewrite = True
    if stream:
        opts = body.get("stream_options") or {}
        if not opts.get("include_usage"):
            body["stream_options"] = {**opts, "include_usage": True}
            drop_usage = rewrite = True
    return Admitted(
        admitted, body, None if rewrite else raw, stream, drop_usage, prompt_estimate, on_demand
    )


async def send(request: Request, path: str, a: Admitted) -> Response:
    """``a`` through the proxy along its route plan: failover, relay, usage.

    Backends of another dialect (:mod:`verbund.federation._dialect`) get the body as
    they need it; a stream they cannot produce is asked for unstreamed and sent on as
    one burst of chunks."""
    svc = services(request)
    body, raw, stream = a.body, a.raw, a.stream
    variants: dict[str, bytes] = {}
    dialects = {b.config.chat_dialect for b in a.admission.plan} - {OPENAI}
    if dialects and path == "/v1/chat/completions":
        if stream and any(streams_unstreamed(body, d) for d in dialects):
            body = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
            raw, stream = None, False
        for d in dialects:
            changed = chat_body_for(body, d)
            if changed is not None:
                variants[d] = orjson.dumps(changed)
    payload = orjson.dumps(body) if raw is None else raw
    failed: set[str] = set()
    waits = 0
    while True:
        try:
            response = await svc.proxy.forward(
                a.admission.forward(
                    path,
                    payload,
                    stream=stream,
                    drop_usage_chunk=a.drop_usage,
                    prompt_estimate=a.prompt_estimate,
                    parsed=a.body if stream else None,
                    client_gone=until_disconnect(request.receive),
                    variants=variants,
                )
            )
            break
        except (BackendLost, BackendRefused, UpstreamTimeout):
            if a.on_demand is None or waits >= REPLACEMENT_WAITS_MOST:
                raise
            waits += 1
            if not await _await_replacement(svc, a, failed):
                raise
    if stream == a.stream:
        return response
    chunks = stream_of_answer(bytes(response.body), include_usage=not a.drop_usage)
    return StreamingResponse(
        _once(chunks),
        media_type="text/event-stream",
        headers={k: v for k, v in response.headers.items() if k.startswith("x-")},
    )


# an on-demand instance lost before the client got a byte (its job cancelled, preempted,
# its node gone) is waited for: the connection refused, broken or hung, or 502 from the
# site's relay, and then the site confirms that the instance is gone
REPLACEMENT_WAITS_MOST = 3  # replacements one request waits for before its error stands
LOSS_GRACE = 10.0  # seconds the site has to confirm the loss (its catalogue drops it)


async def _await_replacement(svc: Services, a: Admitted, failed: set[str]) -> bool:
    """After the backends tried failed without a byte to the client: False if their
    site still lists them (a server that is slow or failing is not lost: its error
    stands); else wait, as a cold-start request does (up to ``routing.cold_start_wait``,
    or 503 ``model_starting``), for an instance other than those this request found
    gone, and plan the route again. Nothing reached the client, so sending the request
    again is safe."""
    assert a.on_demand is not None
    model, policy = a.on_demand
    tried = {b.name for b in a.admission.plan[: svc.config.routing.max_attempts]}
    if not await svc.cold_start.gone(frozenset(tried), LOSS_GRACE):
        return False
    failed |= tried
    record = a.admission.record
    record.status, record.http_status = "ok", 200  # the outcome is the next try's
    await svc.cold_start.ensure(model, policy, frozenset(failed))
    a.admission.plan = [
        b for b in svc.router.plan(model, policy, a.admission.ctx) if b.name not in failed
    ] or a.admission.plan
    return True


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data
