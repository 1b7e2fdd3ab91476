"""The Responses API routes: ``POST /v1/responses`` answered by chat completions
backends, and the stored responses of institutions that opt in (``GET``, ``DELETE``,
``POST .../cancel``).

The body is checked and translated (:mod:`verbund.responses`) before admission; the chat
body then takes the path every chat completion takes (admission, routing, failover,
usage), and the answer is translated back: a complete answer at once, a stream event
by event as its chunks arrive. Built-in tools Verbund does not offer are left out and
named in ``X-Verbund-Dropped-Tools``.

Stateless use (``store: false``, the whole conversation in ``input``) needs nothing
kept. ``store`` (OpenAI's default) keeps the answer only for an institution with
``store_responses = true``, sealed (:class:`~verbund.responses.ResponseStore`); for
others the answer says ``store: false`` and ``previous_response_id`` is a 400.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from verbund.config import ModelConfig
from verbund.errors import BadRequest, NotConfigured, NotFound
from verbund.gateway._body import require_model
from verbund.gateway._deps import json_body, principal, services
from verbund.gateway._inference import (
    Admitted,
    admit_body,
    check_kind,
    enter,
    known_model,
    send,
)
from verbund.gateway._services import Services
from verbund.responses import (
    EventTranslator,
    StoredResponse,
    TranslatedStream,
    Translation,
    new_id,
    response_from_chat,
    translate_request,
)
from verbund.tenancy import Principal

__all__ = ["cancel_response", "create_response", "delete_response", "get_response"]

ENDPOINT = "/v1/responses"
DROPPED_HEADER = "x-verbund-dropped-tools"
_CHAT_KINDS = frozenset({"chat"})
_OWN_TOOLS = frozenset({"function", "namespace"})


def _not_found(response_id: str, param: str | None = None) -> NotFound:
    return NotFound(
        f"No response with id '{response_id}' is stored.", code="response_not_found", param=param
    )


async def _history(svc: Services, who: Principal, body: dict[str, Any]) -> list[Any] | None:
    """The conversation ``previous_response_id`` continues, or a clear refusal."""
    previous = body.get("previous_response_id")
    if previous is None:
        return None
    if not isinstance(previous, str) or not previous:
        raise BadRequest(
            "'previous_response_id' must be a string.",
            code="invalid_type",
            param="previous_response_id",
        )
    if not who.institution.store_responses:
        raise BadRequest(
            "previous_response_id needs stored responses, which this institution has not "
            "enabled; send the whole conversation in 'input' with store: false.",
            code="stored_responses_disabled",
            param="previous_response_id",
        )
    if not svc.responses.ready:
        raise NotConfigured(
            f"Stored responses have no key at this access point (${svc.responses.key_env})."
        )
    stored = await svc.responses.load(previous, who.institution.id)
    if stored is None:
        raise _not_found(previous, "previous_response_id")
    return stored.items


def _translate(
    svc: Services, body: dict[str, Any], model: ModelConfig | None, history: list[Any] | None
) -> Translation:
    limits = svc.config.limits
    return translate_request(
        body,
        max_items=limits.max_messages,
        max_output_tokens=limits.max_output_tokens,
        context_length=model.context_length if model else None,
        history=history,
    )


def _input_items(body: dict[str, Any]) -> list[Any]:
    given = body.get("input")
    if isinstance(given, str):
        return [{"type": "message", "role": "user", "content": given}]
    return list(given) if isinstance(given, list) else []


async def create_response(request: Request) -> Response:
    svc = services(request)
    async with enter(request, ENDPOINT) as entry:
        who = entry.who
        _, body = await json_body(request)
        model = require_model(body)
        config = known_model(svc, who, model)
        history = await _history(svc, who, body)
        tr = _translate(svc, body, config, history)
        check_kind(config, ENDPOINT, _CHAT_KINDS)
        tr.echo.store = (
            who.institution.store_responses
            and body.get("store") is not False
            and svc.responses.ready
        )
        admitted = await admit_body(
            request,
            entry,
            model,
            tr.chat,
            None,
            stream=tr.stream,
            user=tr.user,
            affinity_seed=tr.echo.prompt_cache_key or "",
        )
        plan = admitted.admission.plan
        if plan and all(b.config.responses for b in plan):
            return await _pass_on(request, admitted, body, history, tr)
        response_id = new_id("resp")
        upstream = await send(request, "/v1/chat/completions", admitted)
        headers = {k: v for k, v in upstream.headers.items() if k.startswith("x-")}
        if tr.dropped:
            headers[DROPPED_HEADER] = ", ".join(dict.fromkeys(tr.dropped))
        conversation = [*(history or []), *_input_items(body)]

        async def keep(response: dict[str, Any]) -> None:
            if tr.echo.store:
                items = [*conversation, *response.get("output", [])]
                await svc.responses.save(who.institution.id, who.key_id, response, items)

        if isinstance(upstream, StreamingResponse):
            upstream.body_iterator = TranslatedStream(
                upstream.body_iterator, EventTranslator(tr.echo, response_id), keep
            )
            upstream.headers.update(headers)
            return admitted.admission.respond(upstream)
        answer = response_from_chat(orjson.loads(upstream.body), tr.echo, response_id)
        await keep(answer)
        return admitted.admission.respond(JSONResponse(answer, headers=headers))


async def _pass_on(
    request: Request,
    admitted: Admitted,
    body: dict[str, Any],
    history: list[Any] | None,
    tr: Translation,
) -> Response:
    """The request to backends with a Responses API of their own (vLLM): as it came, but
    stateless (a stored conversation goes along as items; nothing is kept there), with
    the end user's pseudonym, and without the built-in tools Verbund does not offer."""
    out = {k: v for k, v in body.items() if k != "previous_response_id"}
    out["input"] = [*(history or []), *_input_items(body)]
    out["store"] = False
    if tr.dropped:
        out["tools"] = [t for t in body.get("tools") or [] if t.get("type") in _OWN_TOOLS]
    user_hash = admitted.admission.record.user_hash
    for field in ("user", "safety_identifier"):
        if field in out:
            out[field] = user_hash or None
    passed = Admitted(admitted.admission, out, None, tr.stream, False, admitted.prompt_estimate)
    upstream = await send(request, ENDPOINT, passed)
    if tr.dropped:
        upstream.headers[DROPPED_HEADER] = ", ".join(dict.fromkeys(tr.dropped))
    return admitted.admission.respond(upstream)


async def _stored(request: Request) -> StoredResponse:
    """The caller's institution's stored response the path names (404 otherwise)."""
    who = await principal(request)
    response_id = request.path_params["response_id"]
    stored = await services(request).responses.load(response_id, who.institution.id)
    if stored is None:
        raise _not_found(response_id)
    return stored


async def get_response(request: Request) -> Response:
    return JSONResponse((await _stored(request)).response)


async def delete_response(request: Request) -> Response:
    svc = services(request)
    who = await principal(request)
    response_id = request.path_params["response_id"]
    if not await svc.responses.delete(response_id, who.institution.id):
        raise _not_found(response_id)
    return JSONResponse({"id": response_id, "object": "response.deleted", "deleted": True})


async def cancel_response(request: Request) -> Response:
    """Only background responses can be cancelled (OpenAI's rule); Verbund answers every
    response while the request is open, so a stored one has always ended."""
    stored = await _stored(request)
    raise BadRequest(
        f"The response has ended ({stored.response.get('status')}); only background "
        "responses can be cancelled, and Verbund runs none.",
        code="response_not_cancellable",
    )
