"""Helpers for batch and file tests: JSONL input files and uploads through the API."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.conftest import MODEL, Gateway


def chat_line(custom_id: str, model: str = MODEL, **over: Any) -> dict[str, Any]:
    line: dict[str, Any] = {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": model, "messages": [{"role": "user", "content": f"Hallo {custom_id}"}]},
    }
    line.update(over)
    return line


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(x).encode() + b"\n" for x in lines)


async def upload(
    gw: Gateway,
    content: bytes,
    institution: str = "uni-a",
    purpose: str = "batch",
    filename: str = "input.jsonl",
) -> httpx.Response:
    return await gw.client.post(
        "/v1/files",
        files={"file": (filename, content, "application/jsonl")},
        data={"purpose": purpose},
        headers=gw.auth(institution),
    )


async def create_batch(
    gw: Gateway,
    file_id: str,
    institution: str = "uni-a",
    endpoint: str = "/v1/chat/completions",
    **extra: Any,
) -> httpx.Response:
    return await gw.client.post(
        "/v1/batches",
        json={
            "input_file_id": file_id,
            "endpoint": endpoint,
            "completion_window": "24h",
            **extra,
        },
        headers=gw.auth(institution),
    )


async def start_batch(gw: Gateway, lines: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    up = await upload(gw, jsonl(lines))
    assert up.status_code == 200, up.text
    r = await create_batch(gw, up.json()["id"], **extra)
    assert r.status_code == 200, r.text
    batch: dict[str, Any] = r.json()
    return batch


async def output_lines(gw: Gateway, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    r = await gw.client.get(f"/v1/files/{file_id}/content", headers=gw.auth())
    assert r.status_code == 200, r.text
    return [json.loads(x) for x in r.content.splitlines()]
