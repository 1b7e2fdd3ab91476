"""The Open Inference Protocol v2 routes with fake OIP backends: forwarding, bad input,
errors in the protocol's shape, policy, failover, health and usage."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from tests.conftest import MODEL, Gateway, GatewayFactory, federation_dict
from tests.fakes import FakeBackend
from tests.fakes_oip import FakeOipBackend
from verbund.config import FederationConfig, SiteState, parse_config
from verbund.store import UsageRow

DIGITS = "digits"
INFER = f"/v2/models/{DIGITS}/infer"
GOOD = {"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP64", "data": [1, 2, 3, 4.5]}]}


def oip_config(tmp_path: Path, oip_sites: tuple[str, ...] = ("west", "sued"), **extra: Any) -> Any:
    data = federation_dict(tmp_path, **extra)
    for site in data["sites"]:
        if site["name"] in oip_sites:
            site["backends"].append(
                {
                    "name": f"{site['name']}-oip",
                    "kind": "oip",
                    "url": f"http://{site['name']}-oip.invalid:8080",
                    "models": [DIGITS],
                }
            )
    data["models"].append({"name": DIGITS, "kind": "oip", "license": "CC-BY-4.0"})
    return parse_config(data)


def fakes_for(cfg: FederationConfig) -> dict[str, Any]:
    return {
        b.name: FakeOipBackend(b.name) if b.kind == "oip" else FakeBackend(b.name)
        for s in cfg.sites
        for b in s.backends
    }


@pytest.fixture
async def og(gateway_factory: GatewayFactory, tmp_path: Path) -> AsyncIterator[Gateway]:
    cfg = oip_config(tmp_path)
    async with gateway_factory(cfg, fakes_for(cfg)) as g:
        yield g


def oip_calls(gw: Gateway) -> list[dict[str, Any]]:
    return [c for f in gw.fakes.values() if isinstance(f, FakeOipBackend) for c in f.calls]


def assert_oip_error(resp: httpx.Response, status: int) -> str:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"]
    return str(body["error"])


async def usage_rows(gw: Gateway) -> list[UsageRow]:
    await gw.services.accounting.spool.flush()
    async with gw.services.store.session() as s:
        return list((await s.execute(select(UsageRow).order_by(UsageRow.ts))).scalars())


async def test_infer_is_forwarded_and_counted_in_bytes(og: Gateway) -> None:
    raw = json.dumps(GOOD).encode()
    resp = await og.client.post(INFER, content=raw, headers=og.auth())
    assert resp.status_code == 200, resp.text
    assert resp.json()["outputs"][0]["data"] == [10.5]
    assert resp.headers["x-verbund-site"] == "west"
    call = og.fakes["west-oip"].calls[0]
    assert call["path"] == INFER and call["body"] == GOOD
    assert "authorization" not in call["headers"]
    assert call["headers"]["x-request-id"] == resp.headers["x-request-id"]
    (row,) = await usage_rows(og)
    assert (row.endpoint, row.model, row.site, row.backend, row.status) == (
        "/v2/infer",
        DIGITS,
        "west",
        "west-oip",
        "ok",
    )
    assert (row.prompt_tokens, row.completion_tokens) == (0, 0)
    assert row.request_bytes == len(raw) and row.response_bytes == len(resp.content)


async def test_versioned_infer_keeps_the_version(og: Gateway) -> None:
    resp = await og.client.post(
        f"/v2/models/{DIGITS}/versions/v1/infer", json=GOOD, headers=og.auth()
    )
    assert resp.status_code == 200
    assert og.fakes["west-oip"].calls[0]["path"] == f"/v2/models/{DIGITS}/versions/v1/infer"


def _tensor(**override: Any) -> dict[str, Any]:
    t: dict[str, Any] = {"name": "x", "shape": [2], "datatype": "FP32", "data": [1, 2]}
    t.update(override)
    return {k: v for k, v in t.items() if v is not None}


BAD_BODIES: list[tuple[object, str]] = [
    (b"{not json", "not valid JSON"),
    (b"", "empty"),
    (b"[1, 2]", "JSON object"),
    ({}, "'inputs'"),
    ({"inputs": "x"}, "'inputs' must be a non-empty array"),
    ({"inputs": []}, "'inputs' must be a non-empty array"),
    ({"inputs": [7]}, "'inputs[0]' must be an object"),
    ({"inputs": [_tensor(name=None)]}, "inputs[0].name"),
    ({"inputs": [_tensor(shape=[-1])]}, "inputs[0].shape"),
    ({"inputs": [_tensor(shape="2")]}, "inputs[0].shape"),
    ({"inputs": [_tensor(datatype="FLOAT")]}, "inputs[0].datatype"),
    ({"inputs": [_tensor(data=None)]}, "inputs[0].data' is missing"),
    ({"inputs": [_tensor(data=[1, 2, 3])]}, "has 3 elements but shape [2] needs 2"),
    ({"inputs": [_tensor(data=[1, "2"])]}, "must hold numbers"),
    ({"inputs": [_tensor(datatype="BYTES")]}, "must hold strings"),
    ({"inputs": [_tensor(datatype="BOOL", data=[1, 0])]}, "must hold booleans"),
    ({"inputs": [_tensor(), _tensor()]}, "appears twice"),
    ({"inputs": [_tensor()], "outputs": ["sum"]}, "'outputs'"),
    ({"inputs": [_tensor()], "parameters": []}, "'parameters'"),
]


@pytest.mark.parametrize(("body", "message"), BAD_BODIES)
async def test_bad_input_is_400_in_oip_shape_before_any_backend(
    og: Gateway, body: object, message: str
) -> None:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    resp = await og.client.post(INFER, content=content, headers=og.auth())
    assert message in assert_oip_error(resp, 400)
    assert oip_calls(og) == []


async def test_nested_and_bytes_tensors_pass(og: Gateway) -> None:
    body = {
        "inputs": [
            {"name": "a", "shape": [2, 2], "datatype": "INT32", "data": [[1, 2], [3, 4]]},
            {"name": "b", "shape": [1], "datatype": "BYTES", "data": ["hallo"]},
            {"name": "c", "shape": [], "datatype": "BOOL", "data": True},
        ]
    }
    resp = await og.client.post(INFER, json={**body, "id": "req-1"}, headers=og.auth())
    assert resp.status_code == 200, resp.text
    assert resp.json()["outputs"][0]["data"] == [10.0, 5.0, 1.0]


async def test_oversized_body_is_413_in_oip_shape(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    cfg = oip_config(tmp_path, limits={"max_body_bytes": 1024})
    async with gateway_factory(cfg, fakes_for(cfg)) as g:
        data = list(range(600))
        body = {"inputs": [{"name": "x", "shape": [600], "datatype": "INT64", "data": data}]}
        resp = await g.client.post(INFER, json=body, headers=g.auth())
        assert_oip_error(resp, 413)
        assert oip_calls(g) == []


@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), ({"authorization": "Bearer vb-wrong"}, 401)],
)
async def test_keys_are_checked_and_errors_are_oip_shaped(
    og: Gateway, headers: dict[str, str], status: int
) -> None:
    for resp in (
        await og.client.post(INFER, json=GOOD, headers=headers),
        await og.client.get(f"/v2/models/{DIGITS}", headers=headers),
        await og.client.get(f"/v2/models/{DIGITS}/ready", headers=headers),
    ):
        assert_oip_error(resp, status)
    assert oip_calls(og) == []


async def test_unknown_and_wrong_kind_models(og: Gateway) -> None:
    assert "does not exist" in assert_oip_error(
        await og.client.post("/v2/models/nope/infer", json=GOOD, headers=og.auth()), 404
    )
    assert "use the OpenAI routes" in assert_oip_error(
        await og.client.post(f"/v2/models/{MODEL}/infer", json=GOOD, headers=og.auth()), 400
    )
    chat = await og.client.post(
        "/v1/chat/completions",
        json={"model": DIGITS, "messages": [{"role": "user", "content": "x"}]},
        headers=og.auth(),
    )
    assert chat.status_code == 400 and chat.json()["error"]["code"] == "unsupported_model"
    assert f"/v2/models/{DIGITS}/infer" in chat.json()["error"]["message"]
    emb = await og.client.post(
        "/v1/embeddings", json={"model": MODEL, "input": "x"}, headers=og.auth()
    )
    assert emb.status_code == 400 and emb.json()["error"]["code"] == "unsupported_model"
    assert og.upstream_calls() == 0


async def test_unknown_path_and_method_are_oip_shaped(og: Gateway) -> None:
    assert_oip_error(await og.client.get("/v2/nothing/here", headers=og.auth()), 404)
    assert_oip_error(await og.client.get(INFER, headers=og.auth()), 405)
    assert_oip_error(await og.client.delete(f"/v2/models/{DIGITS}", headers=og.auth()), 405)
    bad_version = await og.client.post(
        f"/v2/models/{DIGITS}/versions/..%2F..%2Fx/infer", json=GOOD, headers=og.auth()
    )
    assert bad_version.status_code in (400, 404)
    assert oip_calls(og) == []


async def test_failover_to_the_other_site(og: Gateway) -> None:
    og.fakes["west-oip"].mode = "refuse"
    resp = await og.client.post(INFER, json=GOOD, headers=og.auth())
    assert resp.status_code == 200
    assert resp.headers["x-verbund-site"] == "sued"
    assert not og.services.federation.backends["west-oip"].healthy
    (row,) = await usage_rows(og)
    assert (row.attempts, row.site, row.status) == (2, "sued", "ok")


@pytest.mark.parametrize("status", [502, 503, 504])
async def test_retryable_statuses_fail_over(og: Gateway, status: int) -> None:
    og.fakes["west-oip"].mode, og.fakes["west-oip"].status = "status", status
    resp = await og.client.post(INFER, json=GOOD, headers=og.auth())
    assert resp.status_code == 200 and resp.headers["x-verbund-site"] == "sued"


async def test_backend_client_error_is_passed_on_without_addresses_or_retry(og: Gateway) -> None:
    resp = await og.client.post(
        f"/v2/models/{DIGITS}/versions/v9/infer", json=GOOD, headers=og.auth()
    )
    message = assert_oip_error(resp, 404)
    assert message == "The model server does not serve the requested model version."
    assert len(og.fakes["sued-oip"].calls) == 0
    assert og.services.federation.backends["west-oip"].consecutive_failures == 0
    og.fakes["west-oip"].mode, og.fakes["west-oip"].status = "status", 400
    message = assert_oip_error(await og.client.post(INFER, json=GOOD, headers=og.auth()), 400)
    assert message == "The model server rejected the request as invalid."
    rows = await usage_rows(og)
    assert [r.status for r in rows] == ["error", "error"]
    assert [r.response_bytes for r in rows] == [None, None]


async def test_all_down_is_503_in_oip_shape(og: Gateway) -> None:
    for name in ("west-oip", "sued-oip"):
        og.fakes[name].mode = "refuse"
    assert_oip_error(await og.client.post(INFER, json=GOOD, headers=og.auth()), 503)
    again = await og.client.post(INFER, json=GOOD, headers=og.auth())
    assert "no healthy backend" in assert_oip_error(again, 503)
    assert again.headers["retry-after"]


async def test_policy_is_a_hard_filter(og: Gateway) -> None:
    # uni-b may only use region BY: only sued, even when sued is busier
    og.services.federation.backends["sued-oip"].outstanding = 40
    resp = await og.client.post(INFER, json=GOOD, headers=og.auth("uni-b"))
    assert resp.headers["x-verbund-site"] == "sued"
    # sensitive data may go to west only; with west drained nothing compliant is left
    await og.services.lifecycle.set_state("west", SiteState.draining, "test")
    resp = await og.client.post(
        INFER, json=GOOD, headers={**og.auth(), "x-verbund-data-class": "sensitive"}
    )
    message = assert_oip_error(resp, 503)
    assert "sued: data class sensitive exceeds" in message
    assert "west: site is in state draining" in message
    bad_class = await og.client.post(
        INFER, json=GOOD, headers={**og.auth(), "x-verbund-data-class": "geheim"}
    )
    assert_oip_error(bad_class, 400)
    rows = await usage_rows(og)
    # every authenticated request leaves a record: the refused one, the bad header
    assert [(r.status, r.http_status) for r in rows] == [
        ("ok", 200),
        ("rejected", 503),
        ("rejected", 400),
    ]


async def test_policy_violation_is_403(gateway_factory: GatewayFactory, tmp_path: Path) -> None:
    cfg = oip_config(tmp_path, oip_sites=("ost",))
    async with gateway_factory(cfg, fakes_for(cfg)) as g:
        resp = await g.client.post(
            INFER, json=GOOD, headers={**g.auth(), "x-verbund-data-class": "confidential"}
        )
        assert "ost: data class confidential exceeds" in assert_oip_error(resp, 403)
        meta = await g.client.get(f"/v2/models/{DIGITS}", headers=g.auth("uni-b"))
        assert_oip_error(meta, 403)  # uni-b may use region BY only
        assert oip_calls(g) == []


async def test_metadata_is_forwarded_with_failover(og: Gateway) -> None:
    resp = await og.client.get(f"/v2/models/{DIGITS}", headers=og.auth())
    assert resp.status_code == 200 and resp.json()["inputs"][0]["name"] == "x"
    assert resp.headers["x-verbund-site"] == "west"
    og.fakes["west-oip"].mode = "refuse"
    resp = await og.client.get(f"/v2/models/{DIGITS}/versions/v1", headers=og.auth())
    assert resp.status_code == 200 and resp.headers["x-verbund-site"] == "sued"
    assert og.fakes["sued-oip"].calls[-1]["path"] == f"/v2/models/{DIGITS}/versions/v1"
    missing = await og.client.get(f"/v2/models/{DIGITS}/versions/v7", headers=og.auth())
    assert_oip_error(missing, 404)
    og.fakes["sued-oip"].mode, og.fakes["sued-oip"].status = "status", 500
    assert_oip_error(await og.client.get(f"/v2/models/{DIGITS}", headers=og.auth()), 502)
    assert (await usage_rows(og)) == []  # metadata is not an inference


async def test_health_and_model_ready_follow_the_backends(og: Gateway) -> None:
    live = await og.client.get("/v2/health/live")
    assert live.status_code == 200 and live.json() == {"live": True}
    assert (await og.client.get("/v2/health/ready")).json() == {"ready": True}
    ready = await og.client.get(f"/v2/models/{DIGITS}/ready", headers=og.auth())
    assert ready.status_code == 200 and ready.json() == {"name": DIGITS, "ready": True}
    versioned = await og.client.get(f"/v2/models/{DIGITS}/versions/v1/ready", headers=og.auth())
    assert versioned.json()["ready"] is True
    for name in ("west-oip", "sued-oip"):
        og.services.federation.backends[name].healthy = False
    not_ready = await og.client.get(f"/v2/models/{DIGITS}/ready", headers=og.auth())
    assert not_ready.status_code == 400 and not_ready.json() == {"name": DIGITS, "ready": False}
    server = await og.client.get("/v2/health/ready")
    assert server.status_code == 400 and server.json() == {"ready": False}
    assert oip_calls(og) == []  # readiness is the federation's own knowledge


async def test_server_metadata(og: Gateway) -> None:
    resp = await og.client.get("/v2")
    assert resp.status_code == 200 and resp.json()["name"] == "verbund"


async def test_prober_uses_the_oip_health_route(og: Gateway) -> None:
    await og.services.health.prober.probe_all()
    assert og.fakes["west-oip"].probes == 1 and og.fakes["sued-oip"].probes == 1
