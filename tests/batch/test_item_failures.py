"""Whatever goes wrong with one batch item fails that item; its batch still finishes."""

from __future__ import annotations

from typing import Any

import pytest

from tests.batch.helpers import chat_line, output_lines, start_batch
from tests.conftest import Gateway
from verbund.admission import BatchDispatch
from verbund.errors import RateLimited


async def finished(gw: Gateway, batch_id: str) -> dict[str, Any]:
    await gw.services.batch_runner.run_until_idle(20.0)
    r = await gw.client.get(f"/v1/batches/{batch_id}", headers=gw.auth())
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def deep(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


async def test_a_body_too_deep_to_send_fails_its_item(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A line accepted before nesting was bounded (an older access point checked it) used
    to stay ``running`` for ever: re-encoding its body raised past the item."""
    line = chat_line("deep")
    line["body"]["tools"] = deep(300)
    with monkeypatch.context() as m:
        m.setattr("verbund.gateway._batches.nested_deeper", lambda *a: False)
        batch = await start_batch(gw, [chat_line("ok"), line])
    done = await finished(gw, batch["id"])
    assert done["status"] == "completed"
    assert done["request_counts"] == {"total": 2, "completed": 1, "failed": 1}
    (err,) = await output_lines(gw, done["error_file_id"])
    assert err["custom_id"] == "deep" and err["error"]["code"] == "invalid_request"


async def test_an_unexpected_exception_fails_only_its_item(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    send = BatchDispatch.send

    async def flaky(self: BatchDispatch, plan: Any, path: str, body: bytes, record: Any) -> bytes:
        if b"boom" in body:
            raise ValueError("a bug somewhere below")
        return await send(self, plan, path, body, record)

    monkeypatch.setattr(BatchDispatch, "send", flaky)
    batch = await start_batch(gw, [chat_line("a"), chat_line("boom"), chat_line("c")])
    done = await finished(gw, batch["id"])
    assert done["status"] == "completed"
    assert done["request_counts"] == {"total": 3, "completed": 2, "failed": 1}
    (err,) = await output_lines(gw, done["error_file_id"])
    assert err["custom_id"] == "boom" and err["error"]["code"] == "internal_error"
    assert "bug" not in err["error"]["message"]


async def test_a_full_quota_still_makes_the_item_wait(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = 0
    send = BatchDispatch.send

    async def limited(self: BatchDispatch, plan: Any, path: str, body: bytes, record: Any) -> bytes:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RateLimited("quota", headers={"retry-after": "0"})
        return await send(self, plan, path, body, record)

    monkeypatch.setattr(BatchDispatch, "send", limited)
    batch = await start_batch(gw, [chat_line("a")])
    done = await finished(gw, batch["id"])
    assert done["request_counts"] == {"total": 1, "completed": 1, "failed": 0}
    assert calls == 2
