"""``GET /v1/models``: capabilities and status, the request's data class, and listing
only the kinds a client wants (query or key setting)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.conftest import MODEL, Gateway, GatewayFactory, federation_dict
from tests.gateway.test_openai_routes import assert_openai_error
from verbund.config import parse_config


async def ids(gw: Gateway, query: str = "", **headers: str) -> list[str]:
    resp = await gw.client.get(f"/v1/models{query}", headers={**gw.auth(), **headers})
    assert resp.status_code == 200, resp.text
    return [m["id"] for m in resp.json()["data"]]


async def test_entries_carry_capabilities_and_status(gw: Gateway) -> None:
    resp = await gw.client.get("/v1/models", headers=gw.auth())
    by_id: dict[str, Any] = {m["id"]: m["verbund"] for m in resp.json()["data"]}
    chat, emb = by_id[MODEL], by_id["emb"]
    assert chat["status"] == "ready"
    assert chat["capabilities"]["tools"] and chat["capabilities"]["structured_output"]
    assert not chat["capabilities"]["embeddings"] and not chat["capabilities"]["vision"]
    assert emb["capabilities"]["embeddings"] and not emb["capabilities"]["chat"]
    assert {"context_length", "license", "data_classes", "sites"} <= set(chat)


async def test_kind_query_lists_only_chat_models(gw: Gateway) -> None:
    assert set(await ids(gw)) == {MODEL, "emb"}
    assert await ids(gw, "?kind=chat") == [MODEL]
    assert await ids(gw, "?kind=embedding") == ["emb"]
    bad = await gw.client.get("/v1/models?kind=pictures", headers=gw.auth())
    assert assert_openai_error(bad, 400)["param"] == "kind"


async def test_a_keys_model_kinds_apply_without_a_query(gw: Gateway) -> None:
    created = (
        await gw.client.post(
            "/admin/keys", json={"institution": "uni-a", "name": "webui"}, headers=gw.admin()
        )
    ).json()
    patched = await gw.client.patch(
        f"/admin/keys/{created['id']}", json={"model_kinds": ["chat"]}, headers=gw.admin()
    )
    assert patched.status_code == 200 and patched.json()["model_kinds"] == ["chat"]
    resp = await gw.client.get("/v1/models", headers={"authorization": f"Bearer {created['key']}"})
    assert [m["id"] for m in resp.json()["data"]] == [MODEL]


async def test_data_class_header_hides_models_that_class_would_be_refused(gw: Gateway) -> None:
    # uni-b may use region BY only, whose site takes data up to confidential
    assert await ids(gw, **{"x-verbund-data-class": "confidential"}) != []
    resp = await gw.client.get(
        "/v1/models", headers={**gw.auth("uni-b"), "x-verbund-data-class": "sensitive"}
    )
    assert resp.json()["data"] == []
    resp = await gw.client.get(
        "/v1/models", headers={**gw.auth("uni-b"), "x-verbund-data-class": "confidential"}
    )
    assert {m["id"] for m in resp.json()["data"]} == {MODEL, "emb"}


async def test_wrong_kind_error_names_the_kind_properly(gw: Gateway) -> None:
    resp = await gw.client.post(
        "/v1/chat/completions",
        json={"model": "emb", "messages": [{"role": "user", "content": "x"}]},
        headers=gw.auth(),
    )
    err = assert_openai_error(resp, 400, "unsupported_model")
    assert "is an embedding model" in str(err["message"])


async def test_another_institutions_model_reads_like_an_unknown_one(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    # a model reserved for uni-a: for uni-b its kind and context length are no one's
    # business; every route answers as for a name that does not exist
    data = federation_dict(tmp_path)
    data["models"].append(
        {"name": "ft:smol:uni-a:x", "kind": "chat", "context_length": 64, "institutions": ["uni-a"]}
    )
    data["sites"][0]["backends"][0]["models"].append("ft:smol:uni-a:x")
    asks = {
        "/v1/embeddings": {"model": "ft:smol:uni-a:x", "input": "x"},
        "/v1/chat/completions": {
            "model": "ft:smol:uni-a:x",
            "messages": [{"role": "user", "content": "x"}],
            "max_tokens": 100,
        },
        "/v1/responses": {"model": "ft:smol:uni-a:x", "input": "x", "max_output_tokens": 100},
    }
    async with gateway_factory(parse_config(data)) as gw:
        for path, body in asks.items():
            unknown = {**body, "model": "nothing-here"}
            expected = await gw.client.post(path, json=unknown, headers=gw.auth("uni-b"))
            resp = await gw.client.post(path, json=body, headers=gw.auth("uni-b"))
            assert_openai_error(expected, 404, "model_not_found")
            assert_openai_error(resp, 404, "model_not_found")
