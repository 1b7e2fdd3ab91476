"""``/v1/responses`` through the access point with fake chat completions backends: the
official openai SDK parses what comes back, bad input is a 400 before any backend."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import MODEL, Gateway
from tests.gateway.test_openai_routes import assert_openai_error


def sdk(gw: Gateway, institution: str = "uni-a") -> openai.AsyncOpenAI:
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=gw.app), base_url="http://ap/v1")
    return openai.AsyncOpenAI(
        api_key=gw.keys[institution], base_url="http://ap/v1", http_client=http, max_retries=0
    )


def sent(gw: Gateway) -> list[dict[str, Any]]:
    """What the backends got, in no particular order of backends."""
    return [c for f in gw.fakes.values() for c in f.calls]


async def post(gw: Gateway, body: dict[str, Any], **headers: str) -> httpx.Response:
    return await gw.client.post(
        "/v1/responses", json={"model": MODEL, **body}, headers={**gw.auth(), **headers}
    )


async def test_text_answer_parses_in_the_sdk(gw: Gateway) -> None:
    client = sdk(gw)
    resp = await client.responses.create(
        model=MODEL, input="Hallo", instructions="Be brief.", store=False
    )
    assert resp.status == "completed"
    assert resp.output_text == "Hallo aus dem Rechenzentrum"
    assert resp.usage is not None and resp.usage.input_tokens == 7
    call = sent(gw)[0]
    assert call["path"] == "/v1/chat/completions"
    assert call["body"]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hallo"},
    ]


async def test_stream_events_in_order_with_usage(gw: Gateway) -> None:
    client = sdk(gw)
    stream = await client.responses.create(model=MODEL, input="Hallo", stream=True)
    kinds: list[str] = []
    seqs: list[int] = []
    deltas: list[str] = []
    final = None
    async for event in stream:
        kinds.append(event.type)
        seqs.append(event.sequence_number)
        if event.type == "response.output_text.delta":
            deltas.append(event.delta)
        if event.type == "response.completed":
            final = event.response
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert seqs == list(range(len(seqs)))
    assert "".join(deltas) == "t0 t1 t2 t3 t4 "
    assert final is not None and final.output_text == "t0 t1 t2 t3 t4 "
    assert final.usage is not None and final.usage.output_tokens == 5


@pytest.mark.parametrize("stream", [False, True])
async def test_tool_round_trip(gateway_factory: Any, stream: bool) -> None:
    async with gateway_factory() as gw:
        for f in gw.fakes.values():
            f.tool_call = {"name": "lookup", "arguments": '{"city": "Bonn"}'}
        client = sdk(gw)
        tools: Any = [
            {
                "type": "function",
                "name": "lookup",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
            {"type": "web_search"},
        ]
        raw = await client.responses.with_raw_response.create(
            model=MODEL, input="Weather?", tools=tools, stream=stream
        )
        assert raw.headers["x-verbund-dropped-tools"] == "web_search"
        parsed = raw.parse()
        if stream:
            final = None
            async for event in parsed:  # type: ignore[union-attr]
                if event.type == "response.completed":
                    final = event.response
            assert final is not None
            parsed = final
        call = parsed.output[0]  # type: ignore[union-attr]
        assert call.type == "function_call"
        assert call.name == "lookup" and json.loads(call.arguments) == {"city": "Bonn"}
        body = sent(gw)[0]["body"]
        assert [t["function"]["name"] for t in body["tools"]] == ["lookup"]
        # the second turn: the call and its output go back as chat messages
        for f in gw.fakes.values():
            f.tool_call = None
        second = await client.responses.create(
            model=MODEL,
            input=[
                {"role": "user", "content": "Weather?"},
                {
                    "type": "function_call",
                    "call_id": call.call_id,
                    "name": "lookup",
                    "arguments": call.arguments,
                },
                {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
            ],
            tools=tools,
        )
        assert second.output_text == "Hallo aus dem Rechenzentrum"
        messages = next(c for c in sent(gw) if len(c["body"]["messages"]) == 3)["body"]["messages"]
        assert messages[1]["tool_calls"][0]["id"] == call.call_id
        assert messages[2] == {"role": "tool", "tool_call_id": call.call_id, "content": "sunny"}


async def test_namespace_tools_are_flattened_and_named_back(gw: Gateway) -> None:
    for f in gw.fakes.values():
        f.tool_call = {"name": "crm__find", "arguments": "{}"}
    resp = await post(
        gw,
        {
            "input": "x",
            "tools": [
                {
                    "type": "namespace",
                    "name": "crm",
                    "description": "customers",
                    "tools": [
                        {"type": "function", "name": "find", "parameters": {"type": "object"}}
                    ],
                }
            ],
        },
    )
    assert resp.status_code == 200, resp.text
    item = resp.json()["output"][0]
    assert (item["namespace"], item["name"]) == ("crm", "find")
    assert sent(gw)[0]["body"]["tools"][0]["function"]["name"] == "crm__find"


BAD = [
    ({"input": [{"type": "telepathy"}]}, "input[0].type"),
    (
        {"input": [{"type": "function_call_output", "call_id": "nope", "output": "x"}]},
        "input[0].call_id",
    ),
    ({"input": "x", "max_output_tokens": 3}, "max_output_tokens"),
    ({"input": "x", "max_output_tokens": 10**9}, "max_output_tokens"),
    ({"input": "x", "temperature": 7}, "temperature"),
    (
        {
            "input": "x",
            "text": {"format": {"type": "json_schema", "name": "s", "schema": {"type": 5}}},
        },
        "text.format.schema",
    ),
    (
        {
            "input": "x",
            "tools": [{"type": "function", "name": "f", "parameters": {"type": "nope"}}],
        },
        "tools[0].parameters",
    ),
    (
        {
            "input": "x",
            "tools": [{"type": "web_search"}],
            "tool_choice": {"type": "web_search_preview"},
        },
        "tool_choice",
    ),
    ({"input": "x", "tool_choice": {"type": "function", "name": "ghost"}}, "tool_choice.name"),
    ({"input": [{"role": "user", "content": "x"}] * 5000}, "input"),
    ({"input": "x", "previous_response_id": "resp_abc"}, "previous_response_id"),
    ({"input": "x", "background": True}, "background"),
    ({"input": "x", "metadata": {"k": 5}}, "metadata"),
    ({}, "input"),
]


@pytest.mark.parametrize(("body", "param"), BAD)
async def test_bad_input_is_400_naming_the_parameter(
    gw: Gateway, body: dict[str, Any], param: str
) -> None:
    resp = await post(gw, body)
    err = assert_openai_error(resp, 400)
    assert err["param"] == param
    assert gw.upstream_calls() == 0


async def test_stream_from_a_backend_without_usage_still_reports_usage(gw: Gateway) -> None:
    for f in gw.fakes.values():
        f.usage_in_stream = False
    stream = await sdk(gw).responses.create(model=MODEL, input="Hallo", stream=True)
    final = None
    async for event in stream:
        if event.type == "response.completed":
            final = event.response
    assert final is not None and final.usage is not None
    assert final.usage.output_tokens == 5 and final.usage.input_tokens > 0


async def test_a_stream_broken_after_the_first_bytes_ends_with_response_failed(
    gw: Gateway,
) -> None:
    for f in gw.fakes.values():
        f.mode = "break_stream"
    resp = await post(gw, {"input": "Hallo", "stream": True})
    assert resp.status_code == 200
    kinds = [line[7:] for line in resp.text.splitlines() if line.startswith("event: ")]
    assert kinds[0] == "response.created"
    assert kinds[-2:] == ["error", "response.failed"]
    assert "response.completed" not in kinds
