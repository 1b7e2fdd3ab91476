"""``POST /v1/responses``: OpenAI's Responses API, answered by chat completions backends.

The body is checked and translated (:mod:`verbund.responses`) before admission; the chat
body then takes the path every chat completion takes (admission, routing, failover,
usage), and the answer is translated back: a complete answer at once, a stream event
by event as its chunks arrive. Backends that declare a Responses API of their own
(``responses = true``, vLLM) get the request as it came when the whole route plan
declares one. Built-in tools Verbund does not offer are left out and named in
``X-Verbund-Dropped-Tools``.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from verbund.errors import BadRequest
from verbund.gateway._body import context_length, require_model
from verbund.gateway._deps import json_body, principal, request_id, services
from verbund.gateway._inference import admit_body, check_kind, send
from verbund.responses import (
    EventTranslator,
    TranslatedStream,
    Translation,
    new_id,
    response_from_chat,
    translate_request,
)
from verbund.telemetry._tracing import span

__all__ = ["create_response"]

ENDPOINT = "/v1/responses"
DROPPED_HEADER = "x-verbund-dropped-tools"
_CHAT_KINDS = frozenset({"chat"})


def _translate(request: Request, body: dict[str, Any], model: str) -> Translation:
    svc = services(request)
    if body.get("previous_response_id") is not None:
        raise BadRequest(
            "previous_response_id needs stored responses, which this institution has not "
            "enabled; send the whole conversation in 'input' with store: false.",
            code="stored_responses_disabled",
            param="previous_response_id",
        )
    limits = svc.config.limits
    return translate_request(
        body,
        max_items=limits.max_messages,
        max_output_tokens=limits.max_output_tokens,
        context_length=context_length(svc.federation.models, model),
    )


async def create_response(request: Request) -> Response:
    svc = services(request)
    with span(svc.telemetry.tracer, "verbund.auth"):
        who = await principal(request)
    async with svc.admission.enter(who, ENDPOINT, request_id(request)) as entry:
        _, body = await json_body(request)
        model = require_model(body)
        tr = _translate(request, body, model)
        check_kind(svc, model, ENDPOINT, _CHAT_KINDS)
        tr.echo.store = False
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
        response_id = new_id("resp")
        upstream = await send(request, "/v1/chat/completions", admitted)
        headers = {k: v for k, v in upstream.headers.items() if k.startswith("x-")}
        if tr.dropped:
            headers[DROPPED_HEADER] = ", ".join(dict.fromkeys(tr.dropped))
        if isinstance(upstream, StreamingResponse):
            upstream.body_iterator = TranslatedStream(
                upstream.body_iterator, EventTranslator(tr.echo, response_id)
            )
            upstream.headers.update(headers)
            return admitted.admission.respond(upstream)
        answer = response_from_chat(orjson.loads(upstream.body), tr.echo, response_id)
        return admitted.admission.respond(JSONResponse(answer, headers=headers))
