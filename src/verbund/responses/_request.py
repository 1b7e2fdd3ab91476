"""A ``POST /v1/responses`` body checked and turned into a chat completions body.

Everything is checked before admission sends anything: types of every field OpenAI's
description lists (so a malformed request is a 400 naming the field, whatever backend
would have served it), ranges of the numbers the access point acts on, the input items
and the schemas. Fields that change nothing for a translated answer are accepted and
left out (``include``, ``reasoning``, ``prompt_cache_key``, ``service_tier``,
``truncation``, ``top_logprobs``); fields asking for something Verbund does not do
(``background``, ``conversation``, ``prompt`` templates) are a 400 that says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from verbund.errors import BadRequest
from verbund.responses._input import input_messages
from verbund.responses._objects import Echo
from verbund.responses._tools import response_format, translate_tools

__all__ = ["MIN_OUTPUT_TOKENS", "Translation", "translate_request"]

MIN_OUTPUT_TOKENS = 16  # OpenAI's description: max_output_tokens has minimum 16


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


_TYPES: dict[str, tuple[str, Callable[[object], bool]]] = {
    "string": ("a string", lambda v: isinstance(v, str)),
    "boolean": ("a boolean", lambda v: isinstance(v, bool)),
    "integer": ("an integer", _is_int),
    "number": ("a number", lambda v: _is_int(v) or isinstance(v, float)),
    "object": ("an object", lambda v: isinstance(v, dict)),
    "array": ("an array", lambda v: isinstance(v, list)),
    "string|array": ("a string or an array", lambda v: isinstance(v, str | list)),
    "string|object": ("a string or an object", lambda v: isinstance(v, str | dict)),
}
# every top-level field of CreateResponse; null means absent for all of them
_FIELDS = {
    "model": "string",
    "input": "string|array",
    "instructions": "string",
    "previous_response_id": "string",
    "stream": "boolean",
    "store": "boolean",
    "background": "boolean",
    "max_output_tokens": "integer",
    "max_tool_calls": "integer",
    "temperature": "number",
    "top_p": "number",
    "top_logprobs": "integer",
    "parallel_tool_calls": "boolean",
    "tools": "array",
    "tool_choice": "string|object",
    "text": "object",
    "reasoning": "object",
    "include": "array",
    "metadata": "object",
    "user": "string",
    "safety_identifier": "string",
    "prompt_cache_key": "string",
    "prompt_cache_retention": "string",
    "service_tier": "string",
    "truncation": "string",
    "stream_options": "object",
    "prompt": "object",
    "conversation": "string|object",
    "context_management": "array",
    "moderation": "object",
    "prompt_cache_options": "object",
}
_ENUMS = {
    "truncation": ("auto", "disabled"),
    "service_tier": ("auto", "default", "flex", "scale", "priority"),
    "prompt_cache_retention": ("in-memory", "in_memory", "24h"),
}
_UNSUPPORTED = {
    "background": "Background responses are not supported; send the request without it.",
    "conversation": "Conversations are not supported; send the items or use previous_response_id.",
    "prompt": "Stored prompt templates are not supported; send instructions and input.",
}


def _bad(message: str, param: str, code: str = "invalid_value") -> BadRequest:
    return BadRequest(message, code=code, param=param)


@dataclass(slots=True)
class Translation:
    """What the route needs: the chat body, the echo for the answer, the dropped tools."""

    chat: dict[str, Any]
    echo: Echo
    stream: bool
    dropped: list[str] = field(default_factory=list)
    user: str = ""


def _check_types(body: dict[str, Any]) -> None:
    for name, kind in _FIELDS.items():
        value = body.get(name)
        if value is None:
            continue
        expected, ok = _TYPES[kind]
        if not ok(value):
            raise _bad(f"'{name}' must be {expected}.", name, "invalid_type")
        allowed = _ENUMS.get(name)
        if allowed is not None and value not in allowed:
            raise _bad(f"'{name}' must be one of {', '.join(allowed)}.", name)
    for name, why in _UNSUPPORTED.items():
        if body.get(name) not in (None, False):
            raise _bad(why, name, "unsupported_parameter")
    include = body.get("include") or []
    if not all(isinstance(i, str) for i in include):
        raise _bad("'include' must be an array of strings.", "include", "invalid_type")


def _metadata(value: object) -> dict[str, str]:
    if value is None:
        return {}
    assert isinstance(value, dict)
    if len(value) > 16:
        raise _bad("'metadata' may have at most 16 keys.", "metadata")
    for k, v in value.items():
        if len(k) > 64 or not isinstance(v, str) or len(v) > 512:
            raise _bad(
                "'metadata' maps keys of up to 64 characters to strings of up to 512.",
                "metadata",
            )
    return dict(value)


def _numbers(body: dict[str, Any], most_tokens: int, why: str) -> None:
    limit = body.get("max_output_tokens")
    if limit is not None and not MIN_OUTPUT_TOKENS <= limit <= most_tokens:
        raise _bad(
            f"'max_output_tokens' must be from {MIN_OUTPUT_TOKENS} to {most_tokens}{why}.",
            "max_output_tokens",
        )
    for name, high in (("temperature", 2), ("top_p", 1)):
        value = body.get(name)
        if value is not None and not 0 <= value <= high:
            raise _bad(f"'{name}' must be from 0 to {high}.", name)
    top = body.get("top_logprobs")
    if top is not None and not 0 <= top <= 20:
        raise _bad("'top_logprobs' must be from 0 to 20.", "top_logprobs")
    calls = body.get("max_tool_calls")
    if calls is not None and calls < 1:
        raise _bad("'max_tool_calls' must be at least 1.", "max_tool_calls")


def translate_request(
    body: dict[str, Any],
    *,
    max_items: int,
    max_output_tokens: int,
    context_length: int | None = None,
    history: list[dict[str, Any]] | None = None,
) -> Translation:
    """The chat completions request that answers ``body``, or a 400 naming what is wrong.

    ``history`` holds the items of a stored conversation that ``previous_response_id``
    continues (its inputs and outputs, oldest first)."""
    _check_types(body)
    if body.get("input") is None:
        raise _bad("Missing required parameter: 'input'.", "input", "missing_required_parameter")
    most, why = max_output_tokens, " (limits.max_output_tokens)"
    if context_length is not None and context_length < most:
        most, why = context_length, " (the model's context length)"
    _numbers(body, most, why)
    tools = translate_tools(body.get("tools"), body.get("tool_choice"))
    fmt = response_format(body.get("text"))
    messages = input_messages(body["input"], tools.functions, max_items, history)
    instructions = body.get("instructions")
    if instructions:
        messages.insert(0, {"role": "system", "content": instructions})
    messages = _merge_leading_system(messages)
    if not messages:
        raise _bad("'input' holds no message for the model.", "input")
    model = body["model"]
    chat: dict[str, Any] = {"model": model, "messages": messages}
    for src, dst in (
        ("max_output_tokens", "max_tokens"),
        ("temperature", "temperature"),
        ("top_p", "top_p"),
    ):
        if body.get(src) is not None:
            chat[dst] = body[src]
    if tools.chat_tools:
        chat["tools"] = tools.chat_tools
        if tools.tool_choice is not None:
            chat["tool_choice"] = tools.tool_choice
        if isinstance(body.get("parallel_tool_calls"), bool):
            chat["parallel_tool_calls"] = body["parallel_tool_calls"]
    if fmt is not None:
        chat["response_format"] = fmt
    stream = body.get("stream") is True
    if stream:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    user = body.get("safety_identifier") or body.get("user") or ""
    echo = Echo(
        model=model,
        instructions=instructions,
        tools=list(body.get("tools") or []),
        tool_choice=body.get("tool_choice") or "auto",
        temperature=body.get("temperature"),
        top_p=body.get("top_p"),
        max_output_tokens=body.get("max_output_tokens"),
        metadata=_metadata(body.get("metadata")),
        parallel_tool_calls=body.get("parallel_tool_calls") is not False,
        previous_response_id=body.get("previous_response_id"),
        reasoning=body.get("reasoning"),
        store=body.get("store") is not False,
        text=body.get("text") or {"format": {"type": "text"}},
        truncation=body.get("truncation") or "disabled",
        prompt_cache_key=body.get("prompt_cache_key"),
        functions=tools.functions,
    )
    return Translation(chat=chat, echo=echo, stream=stream, dropped=tools.dropped, user=user)


def _merge_leading_system(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The leading system and developer messages as one: small models' chat templates
    (and llama.cpp's function-calling format, which lists the tools in every system
    message) expect a single system prompt."""
    head: list[str] = []
    i = 0
    while (
        i < len(messages)
        and messages[i]["role"] == "system"
        and isinstance(messages[i]["content"], str)
    ):
        head.append(messages[i]["content"])
        i += 1
    if len(head) < 2:
        return messages
    return [{"role": "system", "content": "\n\n".join(head)}, *messages[i:]]
