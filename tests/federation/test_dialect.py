"""Chat bodies as llama-cpp-python's server needs them (pure)."""

from __future__ import annotations

from typing import Any

from verbund.federation import LLAMA_CPP_PYTHON, OPENAI, chat_body_for, streams_unstreamed

TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}}


def test_openai_backends_get_the_body_as_it_is() -> None:
    body = {"messages": [{"role": "tool", "content": "x"}], "tools": [TOOL]}
    assert chat_body_for(body, OPENAI) is None
    assert chat_body_for({"messages": [{"role": "user", "content": "x"}]}, LLAMA_CPP_PYTHON) is None


def test_json_schema_becomes_json_object_with_schema() -> None:
    body = {
        "messages": [],
        "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": SCHEMA}},
    }
    out = chat_body_for(body, LLAMA_CPP_PYTHON)
    assert out is not None and out["response_format"] == {"type": "json_object", "schema": SCHEMA}
    assert body["response_format"]["type"] == "json_schema"  # the original is untouched


def test_tool_results_become_user_turns_naming_the_function() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
    body: dict[str, Any] = {
        "messages": [
            {"role": "developer", "content": "be brief"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        ],
        "tools": [TOOL],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
    }
    out = chat_body_for(body, LLAMA_CPP_PYTHON)
    assert out is not None
    assert out["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "user", "content": "functions.lookup returned:\nsunny"},
    ]
    assert "parallel_tool_calls" not in out


def test_automatic_tool_choice_answers_in_words_and_required_with_one_tool_forces_it() -> None:
    for choice in ({}, {"tool_choice": "auto"}):
        out = chat_body_for({"messages": [], "tools": [TOOL], **choice}, LLAMA_CPP_PYTHON)
        assert out is not None and out["tool_choice"] == "none"
    out = chat_body_for(
        {"messages": [], "tools": [TOOL], "tool_choice": "required"}, LLAMA_CPP_PYTHON
    )
    assert out is not None
    assert out["tool_choice"] == {"type": "function", "function": {"name": "lookup"}}


def test_only_required_among_several_tools_streams_unstreamed() -> None:
    base = {"stream": True, "tools": [TOOL]}
    two = {**base, "tools": [TOOL, TOOL], "tool_choice": "required"}
    assert streams_unstreamed(two, LLAMA_CPP_PYTHON)
    assert not streams_unstreamed(base, LLAMA_CPP_PYTHON)
    assert not streams_unstreamed({**base, "tool_choice": "auto"}, LLAMA_CPP_PYTHON)
    forced = {"type": "function", "function": {"name": "lookup"}}
    assert not streams_unstreamed({**base, "tool_choice": forced}, LLAMA_CPP_PYTHON)
    assert not streams_unstreamed({**base, "tool_choice": "required"}, LLAMA_CPP_PYTHON)
    assert not streams_unstreamed({"stream": True}, LLAMA_CPP_PYTHON)
    assert not streams_unstreamed(base, OPENAI)
