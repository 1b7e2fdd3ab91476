"""The OpenAI routes: authentication, bad input and the shape of answers (fake backends)."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import MODEL, Gateway


def assert_openai_error(resp: object, status: int, code: str | None = None) -> dict[str, object]:
    import httpx

    assert isinstance(resp, httpx.Response)
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "code", "param"}
    assert err["message"]
    if code is not None:
        assert err["code"] == code
    return err


async def test_chat_answer_comes_back_with_site_and_request_id(gw: Gateway) -> None:
    resp = await gw.chat()
    assert resp.status_code == 200
    assert resp.json()["choices"][0]["message"]["content"] == "Hallo aus dem Rechenzentrum"
    assert resp.headers["x-verbund-site"] == "west"
    request_id = resp.headers["x-request-id"]
    assert str(uuid.UUID(request_id)) == request_id


async def test_client_authorization_is_not_forwarded(gw: Gateway) -> None:
    await gw.chat()
    call = gw.fakes["west-1"].calls[0]
    assert "authorization" not in call["headers"]
    uuid.UUID(call["headers"]["x-request-id"])


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing_api_key"),
        ({"authorization": "Basic abc"}, "invalid_authorization"),
        ({"authorization": "Bearer"}, "invalid_authorization"),
        ({"authorization": "Bearer vb-not-a-real-key"}, "invalid_api_key"),
    ],
)
async def test_missing_or_wrong_key_is_401(gw: Gateway, headers: dict[str, str], code: str) -> None:
    resp = await gw.client.post(
        "/v1/chat/completions",
        headers=headers,
        json={"model": MODEL, "messages": [{"role": "user", "content": "x"}]},
    )
    assert_openai_error(resp, 401, code)
    assert gw.upstream_calls() == 0


async def test_admin_key_is_not_an_inference_key(gw: Gateway) -> None:
    resp = await gw.client.get("/v1/models", headers=gw.admin())
    assert_openai_error(resp, 403)


async def test_institution_key_cannot_use_admin_routes(gw: Gateway) -> None:
    resp = await gw.client.get("/admin/sites", headers=gw.auth())
    assert_openai_error(resp, 403)


BAD_BODIES = [
    (b"{not json", 400, "invalid_json", None),
    (b"", 400, "invalid_json", None),
    (b"[1, 2]", 400, "invalid_json", None),
    (
        b'{"messages": [{"role": "user", "content": "x"}]}',
        400,
        "missing_required_parameter",
        "model",
    ),
    (b'{"model": 7, "messages": []}', 400, "invalid_type", "model"),
    (b'{"model": "smol"}', 400, "missing_required_parameter", "messages"),
    (b'{"model": "smol", "messages": "hi"}', 400, "invalid_type", "messages"),
    (b'{"model": "smol", "messages": [{"content": "x"}]}', 400, "invalid_type", "messages[0]"),
    (
        b'{"model": "smol", "messages": [{"role": "user"}], "stream": "yes"}',
        400,
        "invalid_type",
        "stream",
    ),
    (
        b'{"model": "smol", "messages": [{"role": "user"}], "max_tokens": true}',
        400,
        "invalid_type",
        "max_tokens",
    ),
    (
        b'{"model": "smol", "messages": [{"role": "user"}], "max_tokens": 0}',
        400,
        "invalid_value",
        "max_tokens",
    ),
    (b'{"model": "gpt-9", "messages": [{"role": "user"}]}', 404, "model_not_found", "model"),
]


@pytest.mark.parametrize(("body", "status", "code", "param"), BAD_BODIES)
async def test_bad_input_gets_a_clear_4xx_and_no_backend_call(
    gw: Gateway, body: bytes, status: int, code: str, param: str | None
) -> None:
    resp = await gw.client.post(
        "/v1/chat/completions",
        content=body,
        headers={**gw.auth(), "content-type": "application/json"},
    )
    err = assert_openai_error(resp, status, code)
    assert err["param"] == param
    assert gw.upstream_calls() == 0


async def test_oversized_body_is_413_before_any_backend(gw: Gateway) -> None:
    limit = gw.services.config.limits.max_body_bytes
    big = {"model": MODEL, "messages": [{"role": "user", "content": "x" * (limit + 10)}]}
    resp = await gw.client.post("/v1/chat/completions", json=big, headers=gw.auth())
    assert_openai_error(resp, 413, "request_too_large")
    assert gw.upstream_calls() == 0


async def test_oversized_chunked_body_is_413(gw: Gateway) -> None:
    limit = gw.services.config.limits.max_body_bytes

    async def chunks():  # no content-length: the limit holds while reading
        for _ in range(limit // 65536 + 2):
            yield b"x" * 65536

    resp = await gw.client.post("/v1/chat/completions", content=chunks(), headers=gw.auth())
    assert_openai_error(resp, 413)


async def test_bad_data_class_header(gw: Gateway) -> None:
    resp = await gw.client.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "x"}]},
        headers={**gw.auth(), "x-verbund-data-class": "geheim"},
    )
    assert_openai_error(resp, 400, "invalid_data_class")


async def test_sensitive_header_routes_only_to_a_sensitive_site(gw: Gateway) -> None:
    gw.services.federation.backends[
        "west-1"
    ].outstanding = 50  # west is busiest but only one allowed
    resp = await gw.client.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "x"}]},
        headers={**gw.auth(), "x-verbund-data-class": "sensitive"},
    )
    assert resp.status_code == 200
    assert resp.headers["x-verbund-site"] == "west"


async def test_institution_region_policy_fails_closed(gw: Gateway) -> None:
    # uni-b may only use region BY; with sued in maintenance nothing compliant is left
    from verbund.config import SiteState

    await gw.services.lifecycle.set_state("sued", SiteState.maintenance, "test")
    resp = await gw.chat("uni-b")
    err = assert_openai_error(resp, 503, "no_backend_available")
    assert "west: region NW not among the institution's allowed_regions" in str(err["message"])
    assert "sued: site is in state maintenance" in str(err["message"])
    assert gw.upstream_calls() == 0


async def test_models_lists_what_the_institution_may_use(gw: Gateway) -> None:
    resp = await gw.client.get("/v1/models", headers=gw.auth())
    assert resp.status_code == 200
    body = resp.json()
    assert body["object"] == "list"
    ids = {m["id"] for m in body["data"]}
    assert ids == {MODEL, "emb"}
    m = next(m for m in body["data"] if m["id"] == MODEL)
    assert m["object"] == "model" and isinstance(m["created"], int) and m["owned_by"]
    assert {s["name"] for s in m["verbund"]["sites"]} == {"west", "sued", "ost"}
    resp_b = await gw.client.get(f"/v1/models/{MODEL}", headers=gw.auth("uni-b"))
    assert {s["name"] for s in resp_b.json()["verbund"]["sites"]} == {"sued"}
    missing = await gw.client.get("/v1/models/nope", headers=gw.auth())
    assert_openai_error(missing, 404, "model_not_found")


async def test_unknown_route_and_method_are_openai_shaped(gw: Gateway) -> None:
    assert_openai_error(await gw.client.get("/v1/nothing", headers=gw.auth()), 404)
    assert_openai_error(await gw.client.get("/v1/chat/completions", headers=gw.auth()), 405)


async def test_embeddings_are_forwarded(gw: Gateway) -> None:
    resp = await gw.client.post(
        "/v1/embeddings", json={"model": "emb", "input": "Hallo"}, headers=gw.auth()
    )
    assert resp.status_code == 200
    assert resp.json()["data"][0]["embedding"] == [0.1, 0.2]
    bad = await gw.client.post(
        "/v1/embeddings", json={"model": "emb", "input": ""}, headers=gw.auth()
    )
    assert_openai_error(bad, 400, "invalid_type")
