"""The app's own middleware and handlers: request ids, no redirects, clients gone."""

from __future__ import annotations

import logging
import uuid

import pytest
from sqlalchemy import select
from starlette.types import Message

from tests.conftest import Gateway
from verbund.gateway._app import random_uuid
from verbund.store import UsageRow


def test_request_ids_are_random_version_4_uuids() -> None:
    ids = {random_uuid() for _ in range(2000)}
    assert len(ids) == 2000
    for text in list(ids)[:500]:
        u = uuid.UUID(text)
        assert u.version == 4 and u.variant == uuid.RFC_4122
        assert str(u) == text  # the canonical form llama-cpp-python accepts


async def test_a_trailing_slash_is_not_redirected_to_the_clients_host(gw: Gateway) -> None:
    r = await gw.client.post("/v1/chat/completions/", headers={"host": "evil.example:666"})
    assert r.status_code == 404
    assert "location" not in r.headers
    assert r.json()["error"]["code"] == "not_found"


async def test_a_client_gone_during_the_body_is_one_debug_line(
    gw: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    scope = gw.asgi_scope("/v1/chat/completions", b'{"model": "x"}')
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    with caplog.at_level(logging.DEBUG):
        await gw.app(scope, receive, send)
    ours = [r for r in caplog.records if r.name.startswith(("verbund", "uvicorn"))]
    # the access log's one line for the request, and nothing at warning or above
    assert [r.name for r in ours if r.levelno >= logging.INFO] == ["verbund.access"]
    assert all(r.levelno < logging.WARNING for r in ours), [r.getMessage() for r in ours]
    assert sent[0]["status"] == 499
    await gw.services.accounting.spool.flush()
    async with gw.services.store.session() as s:
        rows = (await s.execute(select(UsageRow))).scalars().all()
    assert [(r.status, r.http_status) for r in rows] == [("cancelled", 499)]
