"""Backends with a Responses API of their own get /v1/responses passed on (fakes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import GatewayFactory, federation_dict
from tests.gateway.test_proxy import usage_rows
from tests.gateway.test_responses_routes import post, sent
from verbund.config import parse_config


def native_config(tmp_path: Path) -> Any:
    data = federation_dict(tmp_path)
    for s in data["sites"]:
        for b in s["backends"]:
            b["responses"] = True
    return parse_config(data)


@pytest.mark.parametrize("stream", [False, True])
async def test_passed_on_stateless_without_dropped_tools(
    gateway_factory: GatewayFactory, tmp_path: Path, stream: bool
) -> None:
    async with gateway_factory(native_config(tmp_path)) as gw:
        tools = [{"type": "function", "name": "f"}, {"type": "file_search"}]
        resp = await post(gw, {"input": "Hallo", "tools": tools, "stream": stream, "user": "anna"})
        assert resp.status_code == 200, resp.text
        assert resp.headers["x-verbund-dropped-tools"] == "file_search"
        call = sent(gw)[0]
        assert call["path"] == "/v1/responses"
        assert call["body"]["store"] is False
        assert call["body"]["tools"] == [{"type": "function", "name": "f"}]
        assert call["body"]["user"].startswith("u_")  # the pseudonym, not "anna"
        if stream:
            assert "event: response.completed" in resp.text
            assert "stream_interrupted" not in resp.text
        else:
            assert resp.json()["output"][0]["content"][0]["text"] == "Hallo aus dem Rechenzentrum"
        row = (await usage_rows(gw))[-1]
        assert (row.prompt_tokens, row.completion_tokens, row.status) == (6, 3, "ok")
        assert row.endpoint == "/v1/responses" and not row.usage_estimated
