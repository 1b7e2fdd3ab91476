"""The Responses translation, without HTTP: requests to chat bodies, chat answers and
chunks to Response objects and events."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from verbund.errors import BadRequest
from verbund.responses import (
    Echo,
    EventTranslator,
    FunctionName,
    response_from_chat,
    translate_request,
)

LIMITS: dict[str, Any] = {"max_items": 100, "max_output_tokens": 4096}


def translate(**body: Any) -> Any:
    return translate_request({"model": "m", **body}, **LIMITS)


def test_text_input_and_instructions_become_system_and_user_messages() -> None:
    tr = translate(input="Hallo", instructions="Kurz.", max_output_tokens=50, temperature=0.2)
    assert tr.chat == {
        "model": "m",
        "messages": [{"role": "system", "content": "Kurz."}, {"role": "user", "content": "Hallo"}],
        "max_tokens": 50,
        "temperature": 0.2,
    }
    assert not tr.stream and tr.dropped == []


def test_developer_and_system_items_merge_into_one_leading_system_message() -> None:
    tr = translate(
        instructions="A",
        input=[
            {
                "type": "message",
                "role": "developer",
                "content": [{"type": "input_text", "text": "B"}],
            },
            {"role": "user", "content": [{"type": "input_text", "text": "C"}]},
        ],
    )
    assert tr.chat["messages"] == [
        {"role": "system", "content": "A\n\nB"},
        {"role": "user", "content": "C"},
    ]


def test_images_become_chat_image_parts() -> None:
    tr = translate(
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "Was ist das?"},
                    {"type": "input_image", "image_url": "data:image/png;base64,AAAA"},
                ],
            }
        ]
    )
    assert tr.chat["messages"][0]["content"] == [
        {"type": "text", "text": "Was ist das?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
    ]


def test_calls_and_outputs_become_assistant_tool_calls_and_tool_messages() -> None:
    tr = translate(
        input=[
            {"role": "user", "content": "x"},
            {"type": "function_call", "call_id": "a", "name": "f", "arguments": "{}"},
            {"type": "function_call", "call_id": "b", "name": "g", "arguments": "{}"},
            {"type": "reasoning", "summary": []},
            {"type": "function_call_output", "call_id": "a", "output": "1"},
            {
                "type": "function_call_output",
                "call_id": "b",
                "output": [{"type": "input_text", "text": "2"}],
            },
        ],
        stream=True,
    )
    messages = tr.chat["messages"]
    assert [c["id"] for c in messages[1]["tool_calls"]] == ["a", "b"]
    assert messages[2:] == [
        {"role": "tool", "tool_call_id": "a", "content": "1"},
        {"role": "tool", "tool_call_id": "b", "content": "2"},
    ]
    assert tr.chat["stream"] is True and tr.chat["stream_options"] == {"include_usage": True}


def test_namespace_tools_flatten_and_builtins_are_dropped() -> None:
    tr = translate(
        input="x",
        tools=[
            {"type": "web_search"},
            {"type": "function", "name": "shell", "parameters": {"type": "object"}},
            {
                "type": "namespace",
                "name": "mcp",
                "description": "d",
                "tools": [{"type": "function", "name": "read"}],
            },
        ],
        tool_choice={"type": "function", "name": "read", "namespace": "mcp"},
        parallel_tool_calls=False,
    )
    assert [t["function"]["name"] for t in tr.chat["tools"]] == ["shell", "mcp__read"]
    assert tr.chat["tool_choice"] == {"type": "function", "function": {"name": "mcp__read"}}
    assert tr.chat["parallel_tool_calls"] is False
    assert tr.dropped == ["web_search"]
    assert tr.echo.functions["mcp__read"] == FunctionName("read", "mcp")


def test_json_schema_format_becomes_response_format() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    tr = translate(
        input="x",
        text={"format": {"type": "json_schema", "name": "s", "schema": schema, "strict": True}},
    )
    assert tr.chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "s", "schema": schema, "strict": True},
    }


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": 5}, "input"),
        ({"input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
        ({"input": [{"role": "user"}]}, "input[0].content"),
        ({"input": [{"type": "function_call", "call_id": "a", "name": "f"}]}, "input[0].arguments"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file"}]}]},
            "input[0].content[0].type",
        ),
        ({"input": "x", "tools": [{"type": "function", "name": "bad name!"}]}, "tools[0].name"),
        ({"input": "x", "tools": "all"}, "tools"),
        ({"input": "x", "tool_choice": "required"}, "tool_choice"),
        (
            {"input": "x", "text": {"format": {"type": "json_schema", "name": "s"}}},
            "text.format.schema",
        ),
        ({"input": "x", "text": {"format": {"type": "xml"}}}, "text.format.type"),
        ({"input": "x", "truncation": "sometimes"}, "truncation"),
        ({"input": "x", "stream": "yes"}, "stream"),
        ({"input": "x", "conversation": "conv_1"}, "conversation"),
        ({"input": [{"role": "user", "content": "x"}] * 101}, "input"),
    ],
)
def test_bad_requests_name_the_parameter(body: dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequest) as caught:
        translate(**body)
    assert caught.value.param == param


def test_complete_answer_as_response_object() -> None:
    echo = Echo(model="m", functions={"mcp__read": FunctionName("read", "mcp")})
    chat = {
        "choices": [
            {
                "finish_reason": "tool_calls",
                "message": {
                    "content": "Moment.",
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "mcp__read", "arguments": "{}"},
                        }
                    ],
                },
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2},
    }
    out = response_from_chat(chat, echo, "resp_1")
    assert out["status"] == "completed" and out["id"] == "resp_1"
    message, call = out["output"]
    assert message["content"][0]["text"] == "Moment."
    assert (call["call_id"], call["namespace"], call["name"]) == ("c1", "mcp", "read")
    assert out["usage"]["input_tokens"] == 5 and out["usage"]["total_tokens"] == 7
    cut = response_from_chat(
        {"choices": [{"finish_reason": "length", "message": {"content": "x"}}]}, echo, "r"
    )
    assert cut["status"] == "incomplete" and cut["incomplete_details"] == {
        "reason": "max_output_tokens"
    }


def events_of(raw: bytes) -> list[dict[str, Any]]:
    out = []
    for block in raw.split(b"\n\n"):
        for line in block.split(b"\n"):
            if line.startswith(b"data: "):
                out.append(orjson.loads(line[6:]))
    return out


def test_stream_events_text_then_a_call_with_sequence_numbers() -> None:
    t = EventTranslator(Echo(model="m"), "resp_1")
    raw = t.start()
    for chunk in (
        {"choices": [{"delta": {"role": "assistant", "content": ""}}]},
        {"choices": [{"delta": {"content": "Ich "}}]},
        {"choices": [{"delta": {"content": "schaue."}}]},
        {
            "choices": [
                {
                    "delta": {
                        "tool_calls": [
                            {"index": 0, "id": "c1", "function": {"name": "f", "arguments": ""}}
                        ]
                    }
                }
            ]
        },
        {
            "choices": [
                {"delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]}}
            ]
        },
        {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}}]},
        {"choices": [{"delta": {}, "finish_reason": "tool_calls"}]},
        {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}},
    ):
        raw += t.feed(chunk)
    raw += t.finish()
    events = events_of(raw)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    final = events[-1]["response"]
    assert final["output"][0]["content"][0]["text"] == "Ich schaue."
    assert final["output"][1]["arguments"] == '{"a":1}'
    assert final["usage"]["output_tokens"] == 4
    assert events[9]["output_index"] == 1


def test_a_broken_stream_ends_with_error_and_failed() -> None:
    t = EventTranslator(Echo(model="m"), "resp_1")
    raw = t.start() + t.feed({"choices": [{"delta": {"content": "Hal"}}]}) + t.fail("gone")
    events = events_of(raw)
    assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]
    assert events[-1]["response"]["status"] == "failed"
    assert events[-1]["response"]["error"]["message"] == "gone"
