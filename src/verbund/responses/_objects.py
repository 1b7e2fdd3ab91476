"""The pieces of a Response object both the complete answer and the stream build.

A translated answer echoes the request's settings (OpenAI clients read them back: the
Agents SDK looks at ``tools`` and ``tool_choice``, Codex at ``status`` and ``usage``), so
the request translation keeps them in :class:`Echo` and every Response object starts from
:func:`response_skeleton`.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Echo",
    "FunctionName",
    "new_id",
    "response_skeleton",
    "response_usage",
]


def new_id(prefix: str) -> str:
    """An id in OpenAI's style (``resp_…``, ``msg_…``, ``fc_…``): unguessable, so a
    stored response cannot be found by counting."""
    return f"{prefix}_{secrets.token_hex(24)}"


@dataclass(frozen=True, slots=True)
class FunctionName:
    """A function the model may call, as the client named it (``namespace`` for the
    functions a namespace tool groups, as Codex CLI sends them)."""

    name: str
    namespace: str | None = None


@dataclass(slots=True)
class Echo:
    """What the request set, as the Response object reports it back."""

    model: str
    instructions: Any = None
    tools: list[Any] = field(default_factory=list)
    tool_choice: Any = "auto"
    temperature: float | None = None
    top_p: float | None = None
    max_output_tokens: int | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    parallel_tool_calls: bool = True
    previous_response_id: str | None = None
    reasoning: Any = None
    store: bool = False
    text: dict[str, Any] = field(default_factory=lambda: {"format": {"type": "text"}})
    truncation: str = "disabled"
    user: str | None = None
    prompt_cache_key: str | None = None
    # chat function name -> how the client named it
    functions: dict[str, FunctionName] = field(default_factory=dict)


def response_skeleton(
    echo: Echo, response_id: str, created_at: int | None = None, status: str = "in_progress"
) -> dict[str, Any]:
    """A Response object with no output yet: every field OpenAI's description requires."""
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()) if created_at is None else created_at,
        "status": status,
        "background": False,
        "completed_at": None,
        "error": None,
        "incomplete_details": None,
        "instructions": echo.instructions,
        "max_output_tokens": echo.max_output_tokens,
        "max_tool_calls": None,
        "model": echo.model,
        "output": [],
        "parallel_tool_calls": echo.parallel_tool_calls,
        "previous_response_id": echo.previous_response_id,
        "prompt_cache_key": echo.prompt_cache_key,
        "reasoning": echo.reasoning,
        "service_tier": "default",
        "store": echo.store,
        "temperature": 1.0 if echo.temperature is None else echo.temperature,
        "text": echo.text,
        "tool_choice": echo.tool_choice,
        "tools": echo.tools,
        "top_logprobs": 0,
        "top_p": 1.0 if echo.top_p is None else echo.top_p,
        "truncation": echo.truncation,
        "usage": None,
        "user": echo.user,
        "metadata": echo.metadata,
    }


def response_usage(chat_usage: object) -> dict[str, Any] | None:
    """Chat completions' usage in the Responses API's words."""
    if not isinstance(chat_usage, dict):
        return None
    prompt = chat_usage.get("prompt_tokens")
    completion = chat_usage.get("completion_tokens")
    p = prompt if isinstance(prompt, int) else 0
    c = completion if isinstance(completion, int) else 0
    details = chat_usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else 0
    return {
        "input_tokens": p,
        "input_tokens_details": {
            "cached_tokens": cached if isinstance(cached, int) else 0,
            "cache_write_tokens": 0,
        },
        "output_tokens": c,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": p + c,
    }


def output_items(
    content: str | None, tool_calls: list[Any], functions: dict[str, FunctionName]
) -> list[dict[str, Any]]:
    """The output items of one complete chat message: its text, then its tool calls."""
    items: list[dict[str, Any]] = []
    if content:
        items.append(message_item(new_id("msg"), content, "completed"))
    for call in tool_calls:
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict):
            continue
        items.append(
            function_call_item(
                new_id("fc"),
                str(call.get("id") or new_id("call")),
                str(fn.get("name") or ""),
                str(fn.get("arguments") or ""),
                functions,
                "completed",
            )
        )
    return items


def message_item(item_id: str, text: str | None, status: str) -> dict[str, Any]:
    content = [] if text is None else [output_text(text)]
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": content,
    }


def output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def function_call_item(
    item_id: str,
    call_id: str,
    chat_name: str,
    arguments: str,
    functions: dict[str, FunctionName],
    status: str,
) -> dict[str, Any]:
    named = functions.get(chat_name, FunctionName(chat_name))
    item: dict[str, Any] = {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": named.name,
        "arguments": arguments,
    }
    if named.namespace is not None:
        item["namespace"] = named.namespace
    return item
