"""Reading and checking request bodies before anything is sent upstream.

Only the fields routing and accounting need are checked; the backend validates the rest
of the body itself. What is checked gets a clear 4xx naming the field.

The nesting of a body is bounded when it is read: orjson reads 1024 levels but writes
only 254, so a body nested deeper than that would pass the reader and then fail every
re-encoding (a 500 with its quota still reserved), and recursive code on the data would
hit Python's recursion limit. Numbers the access point itself acts on (``max_tokens``
reserves quota, ``n`` multiplies the work) are bounded too, so no value can reserve an
institution's whole quota or overflow a counter.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, TypeGuard

import orjson
from starlette.requests import ClientDisconnect, Request

from verbund.config import LimitsConfig, ModelConfig
from verbund.errors import BadRequest, ClientClosed, InvalidJSON, PayloadTooLarge

log = logging.getLogger("verbund.gateway")

_CONTAINERS = (dict, list)


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused as soon as it passes ``limit``. How fast it must arrive is
    the server's business (``gateway.body_timeout``, ``body_min_rate``): a trickling
    client is cut off below the app, whatever route it calls."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BadRequest("Invalid Content-Length header.", code="invalid_content_length")
        if int(declared) > limit:
            raise PayloadTooLarge(f"The request body exceeds the limit of {limit} bytes.")
    parts: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"The request body exceeds the limit of {limit} bytes.")
            parts.append(chunk)
    except ClientDisconnect:
        # common and harmless (a client gave up): one debug line, no error
        log.debug("client disconnected while sending %s %s", request.method, request.url.path)
        raise ClientClosed("The client left while sending its request body.") from None
    return b"".join(parts)


def nested_deeper(value: object, limit: int, raw: bytes | None = None) -> bool:
    """Whether ``value`` has more than ``limit`` levels of arrays and objects.

    ``raw``, the bytes ``value`` was read from, allows a shortcut: a text with no more
    opening brackets than ``limit`` cannot be nested deeper (a large tensor has a few)."""
    if raw is not None and raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    level: list[Any] = [value] if type(value) in _CONTAINERS else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return True
        below: list[Any] = []
        for c in level:
            items = c.values() if type(c) is dict else c
            below.extend([v for v in items if type(v) in _CONTAINERS])
        level = below
    return False


def context_length(models: Mapping[str, ModelConfig], model: str) -> int | None:
    config = models.get(model)
    return config.context_length if config is not None else None


def too_deep(limit: int) -> InvalidJSON:
    return InvalidJSON(
        f"The request body is nested deeper than the limit of {limit} levels.",
        code="json_too_deep",
    )


def parse_object(raw: bytes, max_depth: int) -> dict[str, Any]:
    """``raw`` as a JSON object of at most ``max_depth`` levels (the object is one)."""
    if not raw:
        raise InvalidJSON("The request body is empty; expected a JSON object.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "depth limit" in str(exc):  # orjson stops reading at 1024 levels
            raise too_deep(max_depth) from None
        raise InvalidJSON("The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise InvalidJSON("The request body must be a JSON object.")
    if nested_deeper(body, max_depth, raw):
        raise too_deep(max_depth)
    return body


def _type_error(field: str, expected: str) -> BadRequest:
    return BadRequest(f"'{field}' must be {expected}.", code="invalid_type", param=field)


def require_model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if model is None:
        raise BadRequest(
            "Missing required parameter: 'model'.", code="missing_required_parameter", param="model"
        )
    if not isinstance(model, str) or not model or len(model) > 256:
        raise _type_error("model", "a non-empty string")
    return model


def _is_int(v: object) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


_KINDS: dict[str, tuple[str, Callable[[object], bool]]] = {
    "boolean": ("a boolean", lambda v: isinstance(v, bool)),
    "integer": ("an integer", _is_int),
    "number": ("a number", lambda v: _is_int(v) or isinstance(v, float)),
    "object": ("an object", lambda v: isinstance(v, dict)),
    "string": ("a string", lambda v: isinstance(v, str)),
}
_OPTIONAL_FIELDS = {
    "stream": "boolean",
    "stream_options": "object",
    "max_tokens": "integer",
    "max_completion_tokens": "integer",
    "n": "integer",
    "temperature": "number",
    "top_p": "number",
    "user": "string",
}


def _out_of_range(field: str, low: float, high: float, why: str = "") -> BadRequest:
    return BadRequest(
        f"'{field}' must be from {low:g} to {high:g}{why}.", code="invalid_value", param=field
    )


def check_common(body: dict[str, Any], limits: LimitsConfig, context_length: int | None) -> None:
    """Types and ranges of the optional fields the access point itself reads; null means
    absent. ``max_tokens`` is bounded by the model's context length where the catalogue
    gives one (no answer can be longer) and always by ``limits.max_output_tokens``;
    ``temperature`` and ``top_p`` by the ranges OpenAI's API documents."""
    for field, kind in _OPTIONAL_FIELDS.items():
        value = body.get(field)
        expected, ok = _KINDS[kind]
        if value is not None and not ok(value):
            raise _type_error(field, expected)
    most = limits.max_output_tokens
    why = " (limits.max_output_tokens)"
    if context_length is not None and context_length < most:
        most, why = context_length, " (the model's context length)"
    for field in ("max_tokens", "max_completion_tokens"):
        value = body.get(field)
        if value is not None and not 1 <= value <= most:
            raise _out_of_range(field, 1, most, why)
    n = body.get("n")
    if n is not None and not 1 <= n <= limits.max_n:
        raise _out_of_range("n", 1, limits.max_n)
    for field, high in (("temperature", 2), ("top_p", 1)):
        value = body.get(field)
        if value is not None and not 0 <= value <= high:
            raise _out_of_range(field, 0, high)


def check_chat(body: dict[str, Any], max_messages: int) -> None:
    messages = body.get("messages")
    if messages is None:
        raise BadRequest(
            "Missing required parameter: 'messages'.",
            code="missing_required_parameter",
            param="messages",
        )
    if not isinstance(messages, list) or not messages:
        raise _type_error("messages", "a non-empty array")
    if len(messages) > max_messages:
        raise BadRequest(
            f"'messages' has more than {max_messages} entries.",
            code="too_many_messages",
            param="messages",
        )
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise _type_error(f"messages[{i}]", "an object with a string 'role'")


def check_completion(body: dict[str, Any]) -> None:
    prompt = body.get("prompt")
    if prompt is None:
        raise BadRequest(
            "Missing required parameter: 'prompt'.",
            code="missing_required_parameter",
            param="prompt",
        )
    if not isinstance(prompt, str | list):
        raise _type_error("prompt", "a string or an array")


def check_embedding(body: dict[str, Any]) -> None:
    inp = body.get("input")
    if inp is None:
        raise BadRequest(
            "Missing required parameter: 'input'.", code="missing_required_parameter", param="input"
        )
    if not isinstance(inp, str | list) or inp in ("", []):
        raise _type_error("input", "a non-empty string or array")
