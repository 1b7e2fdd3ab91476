"""A complete chat completion as a Response object."""

from __future__ import annotations

import time
from typing import Any

from verbund.responses._objects import Echo, output_items, response_skeleton, response_usage

__all__ = ["response_from_chat"]


def response_from_chat(
    chat: dict[str, Any], echo: Echo, response_id: str, created_at: int | None = None
) -> dict[str, Any]:
    """The Response object for the chat completion ``chat`` (its first choice)."""
    out = response_skeleton(echo, response_id, created_at, status="completed")
    choices = chat.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else {}
    message = choice.get("message") if isinstance(choice, dict) else None
    message = message if isinstance(message, dict) else {}
    content = message.get("content")
    calls = message.get("tool_calls")
    out["output"] = output_items(
        content if isinstance(content, str) else None,
        calls if isinstance(calls, list) else [],
        echo.functions,
    )
    if isinstance(choice, dict) and choice.get("finish_reason") == "length":
        out["status"] = "incomplete"
        out["incomplete_details"] = {"reason": "max_output_tokens"}
    else:
        out["completed_at"] = int(time.time())
    out["usage"] = response_usage(chat.get("usage"))
    return out
