"""What an OpenAI request body tells admission before it is sent: tokens and affinity."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

__all__ = ["AFFINITY_MIN_CHARS", "affinity_key", "estimate_prompt_tokens", "max_tokens"]

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
    """About four characters a token, plus a few per message for the chat template;
    tool definitions, tool calls and a response format's schema count as characters.

    Used for the quota reservation, and when a backend streams without reporting usage
    (such records are flagged ``usage_estimated``).
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
            calls = m.get("tool_calls") if isinstance(m, dict) else None
            if calls:
                chars += len(orjson.dumps(calls))
        # tool definitions and schemas reach the model's prompt too (Open WebUI sends
        # some 26 KB of tools with every message)
        for extra in ("tools", "functions", "response_format"):
            if body.get(extra):
                chars += len(orjson.dumps(body[extra]))
        return chars // 4 + 4 * len(messages)
    prompt = body.get("prompt")
    if prompt is None:
        prompt = body.get("input")  # embeddings
    if isinstance(prompt, str):
        return len(prompt) // 4 + 1
    if isinstance(prompt, list):
        return sum(len(p) // 4 + 1 if isinstance(p, str) else 1 for p in prompt)
    return 0


def max_tokens(body: dict[str, Any]) -> int | None:
    """The answer's length limit the client set, if any."""
    value = body.get("max_completion_tokens") or body.get("max_tokens")
    return value if isinstance(value, int) and not isinstance(value, bool) else None
