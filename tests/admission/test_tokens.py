"""The prompt estimate counts what reaches the model's prompt, tools included."""

from __future__ import annotations

from verbund.admission import estimate_prompt_tokens

MESSAGES = [{"role": "user", "content": "x" * 400}]


def test_tool_definitions_count_towards_the_prompt() -> None:
    tools = [
        {
            "type": "function",
            "function": {"name": f"tool_{i}", "description": "d" * 1000, "parameters": {}},
        }
        for i in range(26)
    ]
    bare = estimate_prompt_tokens({"messages": MESSAGES})
    with_tools = estimate_prompt_tokens({"messages": MESSAGES, "tools": tools})
    assert bare == 400 // 4 + 4
    assert with_tools - bare >= 26 * 1000 // 4


def test_tool_calls_and_schemas_count() -> None:
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "a" * 800}}
    messages = [*MESSAGES, {"role": "assistant", "content": None, "tool_calls": [call]}]
    fmt = {
        "type": "json_schema",
        "json_schema": {"name": "s", "schema": {"description": "s" * 400}},
    }
    base = estimate_prompt_tokens({"messages": messages})
    assert base >= (400 + 800) // 4
    assert estimate_prompt_tokens({"messages": messages, "response_format": fmt}) >= base + 100
