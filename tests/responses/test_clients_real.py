"""The Responses API, tools and structured output against the real demo federation
(llama.cpp serving SmolLM2 with its function-calling chat format), through the official
openai SDK, streamed and not."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import openai
import pytest

from harness.demo import Demo, start_demo

pytestmark = pytest.mark.real
MODEL = "smollm2-135m"
# strings bounded, so that the grammar-constrained answer always closes within its tokens
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}
WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 24}},
    "required": ["city"],
}
CHAT_TOOLS: Any = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}}]
RESPONSE_TOOLS: Any = [
    {"type": "function", "name": "get_weather", "parameters": WEATHER},
    {"type": "web_search"},
]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    d = start_demo(tmp_path_factory.mktemp("responses") / "state")
    yield d
    d.stop()


@pytest.fixture
def client(demo: Demo) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=demo.url + "/v1", api_key=demo.key("uni-a"), max_retries=2, timeout=120
    )


def test_responses_create(client: openai.OpenAI) -> None:
    raw = client.responses.with_raw_response.create(
        model=MODEL, input="Say hello.", instructions="Be brief.", max_output_tokens=24
    )
    resp = raw.parse()
    assert raw.headers["x-verbund-site"].startswith("rz-")
    assert resp.status in ("completed", "incomplete") and resp.output_text
    assert resp.usage is not None and resp.usage.input_tokens > 0 and resp.usage.output_tokens > 0


def test_responses_stream(client: openai.OpenAI) -> None:
    events = list(
        client.responses.create(
            model=MODEL, input="Name a colour.", max_output_tokens=24, stream=True
        )
    )
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    final = events[-1].response  # type: ignore[union-attr]
    assert deltas and final.output_text == deltas
    assert final.usage is not None and final.usage.output_tokens > 0


@pytest.mark.parametrize("stream", [False, True])
def test_responses_tool_round_trip(client: openai.OpenAI, stream: bool) -> None:
    first = client.responses.create(
        model=MODEL,
        input="What is the weather in Bonn?",
        tools=RESPONSE_TOOLS,
        tool_choice={"type": "function", "name": "get_weather"},
        max_output_tokens=64,
    )
    call = first.output[0]
    assert call.type == "function_call" and call.name == "get_weather"
    assert isinstance(json.loads(call.arguments)["city"], str)  # the grammar enforces the schema
    turn: Any = [
        {"role": "user", "content": "What is the weather in Bonn?"},
        {
            "type": "function_call",
            "call_id": call.call_id,
            "name": call.name,
            "arguments": call.arguments,
        },
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21 degrees"},
    ]
    if stream:
        events = list(
            client.responses.create(
                model=MODEL, input=turn, tools=RESPONSE_TOOLS, max_output_tokens=48, stream=True
            )
        )
        assert events[-1].type in ("response.completed", "response.incomplete")
        second = events[-1].response  # type: ignore[union-attr]
    else:
        second = client.responses.create(
            model=MODEL, input=turn, tools=RESPONSE_TOOLS, max_output_tokens=48
        )
    assert second.status in ("completed", "incomplete") and second.output
    # the tool's output reached the model's prompt: the second turn is longer
    assert first.usage is not None and second.usage is not None
    assert second.usage.input_tokens > first.usage.input_tokens


def test_responses_structured_output(client: openai.OpenAI) -> None:
    resp = client.responses.create(
        model=MODEL,
        input="Invent a person.",
        text={
            "format": {"type": "json_schema", "name": "person", "schema": PERSON, "strict": True}
        },
        max_output_tokens=64,
    )
    jsonschema.validate(json.loads(resp.output_text), PERSON)


@pytest.mark.parametrize("stream", [False, True])
def test_chat_json_schema(client: openai.OpenAI, stream: bool) -> None:
    fmt: Any = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}
    messages: Any = [{"role": "user", "content": "Invent a person."}]
    if stream:
        chunks = list(
            client.chat.completions.create(
                model=MODEL, messages=messages, response_format=fmt, max_tokens=64, stream=True
            )
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        answer = client.chat.completions.create(
            model=MODEL, messages=messages, response_format=fmt, max_tokens=64
        )
        text = answer.choices[0].message.content or ""
    jsonschema.validate(json.loads(text), PERSON)


def test_chat_json_object(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "A JSON object about a cat."}],
        response_format={"type": "json_object"},
        max_tokens=256,
    )
    choice = answer.choices[0]
    text = choice.message.content or ""
    assert text.lstrip().startswith("{")  # the grammar allows JSON only
    if choice.finish_reason == "stop":  # not cut by the token limit: complete JSON
        assert isinstance(json.loads(text), dict)


@pytest.mark.parametrize("choice", ["auto", "forced"])
@pytest.mark.parametrize("stream", [False, True])
def test_chat_tools(client: openai.OpenAI, choice: str, stream: bool) -> None:
    tool_choice: Any = (
        {"type": "function", "function": {"name": "get_weather"}} if choice == "forced" else "auto"
    )
    messages: Any = [{"role": "user", "content": "Call get_weather for Bonn."}]
    kw: Any = {"model": MODEL, "messages": messages, "tools": CHAT_TOOLS, "max_tokens": 96}
    if stream:
        chunks = list(
            client.chat.completions.create(
                **kw, tool_choice=tool_choice, stream=True, stream_options={"include_usage": True}
            )
        )
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
        calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        if calls:
            name = next(tc.function.name for tc in calls if tc.function and tc.function.name)
            args = "".join(tc.function.arguments or "" for tc in calls if tc.function)
        else:
            name, args = "", ""
    else:
        answer = client.chat.completions.create(**kw, tool_choice=tool_choice)
        message = answer.choices[0].message
        text = message.content or ""
        tc = (message.tool_calls or [None])[0]
        name = tc.function.name if tc is not None and tc.type == "function" else ""
        args = tc.function.arguments if tc is not None and tc.type == "function" else ""
    if choice == "forced" or name:
        assert name == "get_weather"
        assert isinstance(json.loads(args)["city"], str)
    else:  # the model may answer in words instead; then it must have said something
        assert text


def test_chat_stream_include_usage(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Say hi."}],
            max_tokens=16,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_demo_chat_servers_use_the_function_calling_format(demo: Demo) -> None:
    """Automatic tool choice needs llama-cpp-python's chatml-function-calling format; the
    embedding server keeps the GGUF's own."""
    formats = {}
    for name, pid in demo.backend_pids().items():
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if b"llama_cpp.server" in argv:
            fmt = argv[argv.index(b"--chat_format") + 1] if b"--chat_format" in argv else b""
            formats[name] = fmt.decode()
    assert formats["west-llama-1"] == "chatml-function-calling"
    assert formats["ost-embed-1"] == ""
