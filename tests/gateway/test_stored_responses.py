"""Stored responses: an institution's opt-in, sealed at rest, scoped to the institution,
deletable, expiring; without the opt-in ``previous_response_id`` is a clear 400."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.conftest import MODEL, Gateway, GatewayFactory, federation_dict
from tests.gateway.test_openai_routes import assert_openai_error
from tests.gateway.test_responses_routes import post, sent
from verbund.config import parse_config
from verbund.responses import ResponseStore
from verbund.store import StoredResponseRow

KEY_ENV = "VERBUND_TEST_RESPONSES_KEY"


def opt_in_config(tmp_path: Path, **responses: Any) -> Any:
    data = federation_dict(tmp_path)
    data["institutions"][0]["store_responses"] = True
    data["institutions"][1]["store_responses"] = True
    data["responses"] = {"key_env": KEY_ENV, **responses}
    return parse_config(data)


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "a passphrase for the test's sealed responses")


async def test_without_opt_in_nothing_is_stored_and_continuing_is_400(gw: Gateway) -> None:
    resp = await post(gw, {"input": "Hallo"})
    assert resp.status_code == 200 and resp.json()["store"] is False
    got = await gw.client.get(f"/v1/responses/{resp.json()['id']}", headers=gw.auth())
    assert_openai_error(got, 404)
    calls = gw.upstream_calls()
    again = await post(gw, {"input": "more", "previous_response_id": resp.json()["id"]})
    err = assert_openai_error(again, 400, "stored_responses_disabled")
    assert err["param"] == "previous_response_id"
    assert gw.upstream_calls() == calls


@pytest.mark.usefixtures("key")
@pytest.mark.parametrize("stream", [False, True])
async def test_stored_response_continues_a_conversation(
    gateway_factory: GatewayFactory, tmp_path: Path, stream: bool
) -> None:
    async with gateway_factory(opt_in_config(tmp_path)) as gw:
        first = await post(gw, {"input": "Erste Frage", "stream": stream})
        assert first.status_code == 200
        if stream:
            completed = [line for line in first.text.splitlines() if line.startswith("data: ")][-1]
            response_id = json.loads(completed[6:])["response"]["id"]
        else:
            response_id = first.json()["id"]
            assert first.json()["store"] is True
        got = await gw.client.get(f"/v1/responses/{response_id}", headers=gw.auth())
        assert got.status_code == 200 and got.json()["id"] == response_id
        assert got.json()["status"] == "completed"
        second = await post(gw, {"input": "Zweite Frage", "previous_response_id": response_id})
        assert second.status_code == 200, second.text
        messages = next(c["body"]["messages"] for c in sent(gw) if len(c["body"]["messages"]) == 3)
        assert [m["role"] for m in messages] == ["user", "assistant", "user"]
        assert messages[0]["content"] == "Erste Frage"
        assert messages[2]["content"] == "Zweite Frage"
        # sealed at rest: the store holds no text of the conversation
        async with gw.services.store.session() as s:
            rows = (await s.execute(select(StoredResponseRow))).scalars().all()
        assert len(rows) == 2
        for row in rows:
            assert b"Frage" not in row.sealed and b"Rechenzentrum" not in row.sealed


@pytest.mark.usefixtures("key")
async def test_other_institutions_see_404_and_delete_works(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    async with gateway_factory(opt_in_config(tmp_path)) as gw:
        response_id = (await post(gw, {"input": "Hallo"})).json()["id"]
        path = f"/v1/responses/{response_id}"
        assert_openai_error(await gw.client.get(path, headers=gw.auth("uni-b")), 404)
        assert_openai_error(await gw.client.delete(path, headers=gw.auth("uni-b")), 404)
        assert_openai_error(await gw.client.post(f"{path}/cancel", headers=gw.auth("uni-b")), 404)
        resp = await gw.client.post(
            "/v1/responses",
            json={"model": MODEL, "input": "x", "previous_response_id": response_id},
            headers=gw.auth("uni-b"),
        )
        assert assert_openai_error(resp, 404)["param"] == "previous_response_id"
        cancel = await gw.client.post(f"{path}/cancel", headers=gw.auth())
        assert_openai_error(cancel, 400, "response_not_cancellable")
        deleted = await gw.client.delete(path, headers=gw.auth())
        assert deleted.json() == {"id": response_id, "object": "response.deleted", "deleted": True}
        assert_openai_error(await gw.client.get(path, headers=gw.auth()), 404)


@pytest.mark.usefixtures("key")
async def test_store_false_keeps_nothing(gateway_factory: GatewayFactory, tmp_path: Path) -> None:
    async with gateway_factory(opt_in_config(tmp_path)) as gw:
        resp = await post(gw, {"input": "Hallo", "store": False})
        assert resp.json()["store"] is False
        got = await gw.client.get(f"/v1/responses/{resp.json()['id']}", headers=gw.auth())
        assert_openai_error(got, 404)


async def test_opt_in_without_a_key_is_a_clear_503_for_continuing(
    gateway_factory: GatewayFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    async with gateway_factory(opt_in_config(tmp_path)) as gw:
        resp = await post(gw, {"input": "x", "previous_response_id": "resp_1"})
        err = assert_openai_error(resp, 503, "not_configured")
        assert KEY_ENV in str(err["message"])


@pytest.mark.usefixtures("key")
async def test_expired_responses_are_gone_and_purged(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    async with gateway_factory(opt_in_config(tmp_path, retention_hours=0.001)) as gw:
        response_id = (await post(gw, {"input": "Hallo"})).json()["id"]
        store: ResponseStore = gw.services.responses
        assert await store.load(response_id, "uni-a") is not None
        later = time.time() + 3.6 * 2  # past the retention of 3.6 s
        assert await store.purge(now=later) == 1
        assert await store.load(response_id, "uni-a") is None


@pytest.mark.usefixtures("key")
async def test_sealed_rows_do_not_open_under_another_key_or_tenant(
    gateway_factory: GatewayFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with gateway_factory(opt_in_config(tmp_path)) as gw:
        response_id = (await post(gw, {"input": "Hallo"})).json()["id"]
        monkeypatch.setenv(KEY_ENV, "another key")
        other = ResponseStore(gw.services.store, KEY_ENV, 24)
        assert await other.load(response_id, "uni-a") is None
        async with gw.services.store.session() as s, s.begin():
            row = await s.get(StoredResponseRow, response_id)
            assert row is not None
            row.institution_id = "uni-b"  # a blob moved to another tenant
        assert await gw.services.responses.load(response_id, "uni-b") is None
