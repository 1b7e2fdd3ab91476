"""A front-end's key (Open WebUI serving all its users through one key): the person named
by its forwarded user headers gets a pseudonym for usage and quotas; other keys' headers
are ignored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.conftest import MODEL, Gateway, GatewayFactory, federation_dict
from tests.gateway.test_openai_routes import assert_openai_error
from tests.gateway.test_proxy import usage_rows
from verbund.config import parse_config

EMAIL = "anna.beispiel@uni-a.example"


async def front_end_key(gw: Gateway) -> str:
    created = (
        await gw.client.post(
            "/admin/keys", json={"institution": "uni-a", "name": "open-webui"}, headers=gw.admin()
        )
    ).json()
    patched = await gw.client.patch(
        f"/admin/keys/{created['id']}", json={"front_end": True}, headers=gw.admin()
    )
    assert patched.status_code == 200 and patched.json()["front_end"] is True
    return str(created["key"])


async def chat_as(gw: Gateway, key: str, **headers: str) -> Any:
    return await gw.client.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "Hallo"}]},
        headers={"authorization": f"Bearer {key}", **headers},
    )


async def test_person_pseudonym_is_recorded_and_sent_never_the_email(gw: Gateway) -> None:
    key = await front_end_key(gw)
    resp = await chat_as(gw, key, **{"x-openwebui-user-email": EMAIL})
    assert resp.status_code == 200
    row = (await usage_rows(gw))[-1]
    assert row.person_id is not None and row.person_id.startswith("u_")
    assert EMAIL not in row.person_id
    sent = [c["body"] for f in gw.fakes.values() for c in f.calls][-1]
    assert sent["user"] == row.person_id
    # the same person again: the same pseudonym; another person: another one
    await chat_as(gw, key, **{"x-openwebui-user-email": EMAIL})
    await chat_as(gw, key, **{"x-openwebui-user-email": "bert@uni-a.example"})
    persons = [r.person_id for r in (await usage_rows(gw))[-3:]]
    assert persons[0] == persons[1] == row.person_id != persons[2]


async def test_headers_of_other_keys_are_ignored(gw: Gateway) -> None:
    resp = await chat_as(gw, gw.keys["uni-a"], **{"x-openwebui-user-id": "42"})
    assert resp.status_code == 200
    row = (await usage_rows(gw))[-1]
    assert row.person_id is None
    sent = [c["body"] for f in gw.fakes.values() for c in f.calls][-1]
    assert "user" not in sent


async def test_per_person_quota(gateway_factory: GatewayFactory, tmp_path: Path) -> None:
    data = federation_dict(tmp_path)
    data["institutions"][0]["person_requests_per_minute"] = 1
    async with gateway_factory(parse_config(data)) as gw:
        key = await front_end_key(gw)
        anna = {"x-openwebui-user-id": "anna"}
        assert (await chat_as(gw, key, **anna)).status_code == 200
        assert_openai_error(await chat_as(gw, key, **anna), 429)
        assert (await chat_as(gw, key, **{"x-openwebui-user-id": "bert"})).status_code == 200
