"""Bounds on what a request body may hold: nesting, token counts, choices, sampling ranges."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.batch.helpers import chat_line, create_batch, jsonl, upload
from tests.conftest import MODEL, Gateway, GatewayFactory, federation_dict
from tests.gateway.test_openai_routes import assert_openai_error
from verbund.config import parse_config
from verbund.gateway._body import nested_deeper


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("depth", [300, 1000, 2000])
@pytest.mark.parametrize("stream", [True, False])
async def test_deeply_nested_bodies_are_400_before_any_backend(
    gw: Gateway, depth: int, stream: bool
) -> None:
    """A streamed body is re-encoded: nested 255..1023 deep it used to end in a 500."""
    body = (
        b'{"model": "smol", "stream": %s, "messages": [{"role": "user", "content": "x"}], '
        b'"tools": %s}' % (b"true" if stream else b"false", b"[" * depth + b"]" * depth)
    )
    resp = await gw.client.post(
        "/v1/chat/completions", content=body, headers={**gw.auth(), "content-type": "x"}
    )
    err = assert_openai_error(resp, 400, "json_too_deep")
    assert "64 levels" in str(err["message"])
    assert gw.upstream_calls() == 0


async def test_nesting_within_the_limit_is_forwarded(gw: Gateway) -> None:
    resp = await gw.chat(stream=True, tools=nested(60))
    assert resp.status_code == 200, resp.text


def test_depth_counting() -> None:
    assert not nested_deeper({"a": nested(63)}, 64)
    assert nested_deeper({"a": nested(64)}, 64)
    assert nested_deeper({"a": {"b": nested(63)}}, 64)
    assert not nested_deeper({"a": [0] * 10_000}, 2)
    assert not nested_deeper({"a": nested(99)}, 64, raw=b"{}")  # the brackets shortcut


RANGES = [
    ({"max_tokens": 2**31}, "max_tokens"),
    ({"max_tokens": 2**63 - 1}, "max_tokens"),
    ({"max_tokens": 2**64 - 1}, "max_tokens"),
    ({"max_completion_tokens": 2**31}, "max_completion_tokens"),
    ({"max_completion_tokens": 0}, "max_completion_tokens"),
    ({"n": 10**9}, "n"),
    ({"n": 17}, "n"),
    ({"n": 0}, "n"),
    ({"temperature": 2.01}, "temperature"),
    ({"temperature": -0.1}, "temperature"),
    ({"temperature": 1e308}, "temperature"),
    ({"top_p": 1.5}, "top_p"),
    ({"top_p": -1}, "top_p"),
]


@pytest.mark.parametrize(("fields", "param"), RANGES)
async def test_out_of_range_parameters_are_400_naming_them(
    gw: Gateway, fields: dict[str, Any], param: str
) -> None:
    err = assert_openai_error(await gw.chat(**fields), 400, "invalid_value")
    assert err["param"] == param
    assert f"'{param}'" in str(err["message"])
    assert gw.upstream_calls() == 0


@pytest.mark.parametrize(
    "fields",
    [
        {"max_tokens": 131072, "n": 16, "temperature": 2, "top_p": 1},
        {"max_completion_tokens": 1, "n": 1, "temperature": 0, "top_p": 0},
    ],
)
async def test_bounds_themselves_are_accepted(gw: Gateway, fields: dict[str, Any]) -> None:
    assert (await gw.chat(**fields)).status_code == 200


async def test_max_tokens_is_bounded_by_the_models_context_length(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    models = [{"name": MODEL, "kind": "chat", "context_length": 4096}, {"name": "emb"}]
    cfg = parse_config(federation_dict(tmp_path, models=models, limits={"max_n": 4}))
    async with gateway_factory(cfg) as gw:
        err = assert_openai_error(await gw.chat(max_tokens=4097), 400, "invalid_value")
        assert err["param"] == "max_tokens" and "context length" in str(err["message"])
        assert (await gw.chat(max_tokens=4096)).status_code == 200
        err = assert_openai_error(await gw.chat(n=5), 400, "invalid_value")
        assert err["param"] == "n" and "from 1 to 4" in str(err["message"])


async def test_batch_lines_get_the_same_checks(gw: Gateway) -> None:
    deep = chat_line("deep")
    deep["body"]["tools"] = nested(300)
    huge = chat_line("huge")
    huge["body"]["max_tokens"] = 2**63 - 1
    f = (await upload(gw, jsonl([chat_line("ok"), deep, huge]))).json()
    batch = (await create_batch(gw, f["id"])).json()
    assert batch["status"] == "failed"
    errors = {e["line"]: e for e in batch["errors"]["data"]}
    assert errors[2]["code"] == "json_too_deep"
    assert errors[3]["code"] == "invalid_value" and errors[3]["param"] == "body.max_tokens"
    assert gw.upstream_calls() == 0
