"""Backends of the llama-cpp-python dialect get bodies they accept; clients see OpenAI's
shapes all the same (fake backends)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.conftest import GatewayFactory, federation_dict
from verbund.config import parse_config

TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]


def llama_config(tmp_path: Path) -> Any:
    data = federation_dict(tmp_path)
    for s in data["sites"]:
        for b in s["backends"]:
            b["dialect"] = "llama-cpp-python"
    return parse_config(data)


def sent(gw: Any) -> list[dict[str, Any]]:
    return [c["body"] for f in gw.fakes.values() for c in f.calls]


async def test_automatic_tool_choice_is_asked_for_words_and_streams(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    async with gateway_factory(llama_config(tmp_path)) as gw:
        resp = await gw.chat(stream=True, tools=TOOLS)
        assert resp.status_code == 200
        body = sent(gw)[0]
        assert body["stream"] is True and body["tool_choice"] == "none"


async def test_streamed_required_tool_choice_among_several_is_asked_unstreamed(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    async with gateway_factory(llama_config(tmp_path)) as gw:
        for f in gw.fakes.values():
            f.tool_call = {"name": "lookup", "arguments": '{"q": 1}'}
        two = [*TOOLS, {**TOOLS[0], "function": {**TOOLS[0]["function"], "name": "other"}}]
        resp = await gw.chat(
            stream=True, tools=two, tool_choice="required", stream_options={"include_usage": True}
        )
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        body = sent(gw)[0]
        assert "stream" not in body and body["tool_choice"] == "auto"
        datas = [line[6:] for line in resp.text.splitlines() if line.startswith("data: ")]
        assert datas[-1] == "[DONE]"
        chunks = [json.loads(d) for d in datas[:-1]]
        calls = [c["choices"][0]["delta"].get("tool_calls") for c in chunks if c["choices"]]
        calls = [c for c in calls if c]
        assert calls[0][0]["function"] == {"name": "lookup", "arguments": '{"q": 1}'}
        assert chunks[-1]["usage"]["total_tokens"] == 11


async def test_json_schema_reaches_llama_as_json_object_with_schema(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    async with gateway_factory(llama_config(tmp_path)) as gw:
        fmt = {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}
        resp = await gw.chat(response_format=fmt)
        assert resp.status_code == 200
        assert sent(gw)[0]["response_format"] == {"type": "json_object", "schema": schema}


async def test_openai_backends_get_the_clients_body(gateway_factory: GatewayFactory) -> None:
    async with gateway_factory() as gw:
        resp = await gw.chat(stream=True, tools=TOOLS)
        assert resp.status_code == 200
        body = sent(gw)[0]
        assert body["stream"] is True and "tool_choice" not in body
