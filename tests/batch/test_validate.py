"""Streaming line splitting and validation of batch input files."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from verbund.batch import validate_input
from verbund.batch._validate import split_lines
from verbund.errors import BadRequest, ModelNotFound


async def chunked(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def lines_of(data: bytes, size: int, limit: int = 1 << 20) -> list[tuple[int, int, int, Any]]:
    return [
        (ln.number, ln.offset, ln.length, ln.data)
        async for ln in split_lines(chunked(data, size), limit)
    ]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=12),
    st.integers(min_value=1, max_value=17),
    st.booleans(),
)
async def test_split_lines_matches_splitlines_for_any_chunking(
    parts: list[bytes], size: int, trailing: bool
) -> None:
    data = b"\n".join(parts) + (b"\n" if trailing and parts else b"")
    got = await lines_of(data, size)
    expected = data.split(b"\n")
    if data.endswith(b"\n") or not data:
        expected = expected[:-1]
    assert [g[3] for g in got] == expected
    for number, offset, length, line in got:
        assert data[offset : offset + length].rstrip(b"\n") == line
        assert number == data[:offset].count(b"\n") + 1


async def test_overlong_lines_are_reported_not_kept() -> None:
    data = b"short\n" + b"x" * 5000 + b"\nend"
    got = await lines_of(data, 100, limit=1000)
    assert [(g[0], g[3]) for g in got] == [(1, b"short"), (2, None), (3, b"end")]
    assert got[1][2] == 5001


def check_body(body: dict[str, Any]) -> str:
    if "messages" not in body:
        raise BadRequest(
            "Missing required parameter: 'messages'.",
            code="missing_required_parameter",
            param="messages",
        )
    return str(body["model"])


def check_model(model: str) -> None:
    if model != "smol":
        raise ModelNotFound(f"The model '{model}' does not exist.", param="model")


def line(cid: str, **over: Any) -> bytes:
    obj = {
        "custom_id": cid,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "smol", "messages": []},
    }
    obj.update(over)
    return json.dumps(obj).encode() + b"\n"


async def validate(data: bytes, **kw: Any) -> Any:
    return await validate_input(
        chunked(data, 7),
        "/v1/chat/completions",
        max_requests=kw.get("max_requests", 100),
        max_line_bytes=kw.get("max_line_bytes", 4096),
        check_body=check_body,
        check_model=check_model,
    )


async def test_valid_file_gives_items_with_offsets() -> None:
    data = line("a") + b"\r\n" + line("b")
    v = await validate(data)
    assert not v.errors and v.model == "smol"
    assert [(i.line, i.custom_id) for i in v.items] == [(1, "a"), (3, "b")]
    for item in v.items:
        assert (
            json.loads(data[item.offset : item.offset + item.length])["custom_id"] == item.custom_id
        )


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        (b"nope\n", "invalid_json_line"),
        (line("a"), "duplicate_custom_id"),
        (line("z", url="/v1/completions"), "invalid_url"),
        (line("z", method="PUT"), "invalid_method"),
        (line("z", body={"model": "gpt"}), "missing_required_parameter"),
        (line("z", body={"model": "gpt", "messages": []}), "model_not_found"),
        (line("z", body=[]), "invalid_body"),
        (line("z", custom_id=""), "invalid_custom_id"),
        (line("z", custom_id="x" * 600), "invalid_custom_id"),
        (b'"just a string"\n', "invalid_json_line"),
    ],
)
async def test_each_kind_of_bad_line(bad: bytes, code: str) -> None:
    v = await validate(line("a") + bad)
    assert [(e.line, e.code) for e in v.errors] == [(2, code)]


async def test_request_limit() -> None:
    v = await validate(b"".join(line(f"r{i}") for i in range(5)), max_requests=3)
    assert [e.code for e in v.errors] == ["too_many_requests"]
    assert v.errors[0].line == 4


async def test_error_list_is_bounded() -> None:
    v = await validate(b"x\n" * 500, max_requests=1000)
    assert v.error_count == 500 and len(v.errors) == 100
