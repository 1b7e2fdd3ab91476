"""``stream_options.include_usage`` gets its usage chunk even from a backend that sends
none, counted by the access point and recorded as estimated."""

from __future__ import annotations

import json
from typing import Any

from tests.conftest import MODEL, GatewayFactory
from tests.gateway.test_proxy import usage_rows


async def test_usage_chunk_is_written_when_the_backend_sends_none(
    gateway_factory: GatewayFactory,
) -> None:
    async with gateway_factory() as gw:
        for f in gw.fakes.values():
            f.usage_in_stream = False
        tools: list[dict[str, Any]] = [
            {"type": "function", "function": {"name": "f", "description": "d" * 4000}}
        ]
        resp = await gw.chat(stream=True, stream_options={"include_usage": True}, tools=tools)
        assert resp.status_code == 200
        datas = [line[6:] for line in resp.text.splitlines() if line.startswith("data: ")]
        assert datas[-1] == "[DONE]"
        usage = json.loads(datas[-2])
        assert usage["choices"] == [] and usage["model"] == MODEL
        assert usage["usage"]["completion_tokens"] == 5
        assert usage["usage"]["prompt_tokens"] >= 1000  # the tools count
        row = (await usage_rows(gw))[-1]
        assert row.usage_estimated and row.completion_tokens == 5
