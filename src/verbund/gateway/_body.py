"""Reading and checking request bodies before anything is sent upstream.

Only the fields routing and accounting need are checked; the backend validates the rest
of the body itself. What is checked gets a clear 4xx naming the field.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeGuard

import orjson
from starlette.requests import ClientDisconnect, Request

from verbund.errors import BadRequest, ClientClosed, InvalidJSON, PayloadTooLarge


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
        raise ClientClosed("The client left while sending its request body.") from None
    return b"".join(parts)


def parse_object(raw: bytes) -> dict[str, Any]:
    if not raw:
        raise InvalidJSON("The request body is empty; expected a JSON object.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidJSON("The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise InvalidJSON("The request body must be a JSON object.")
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


def check_common(body: dict[str, Any]) -> None:
    """Types of the optional fields the access point itself reads; null means absent."""
    for field, kind in _OPTIONAL_FIELDS.items():
        value = body.get(field)
        expected, ok = _KINDS[kind]
        if value is not None and not ok(value):
            raise _type_error(field, expected)
    for field in ("max_tokens", "max_completion_tokens", "n"):
        value = body.get(field)
        if _is_int(value) and value < 1:
            raise BadRequest(f"'{field}' must be at least 1.", code="invalid_value", param=field)


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
