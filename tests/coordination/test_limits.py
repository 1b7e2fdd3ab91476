"""Quota semantics in memory (one access point); the Redis variant runs in the real tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import make_config
from verbund.coordination import Limit, LocalLimiter
from verbund.errors import RateLimited


async def test_requests_per_minute_are_exact() -> None:
    lim = LocalLimiter()
    limits = [Limit("institution:a", "rpm", 3)]
    for _ in range(3):
        await lim.acquire(limits, 10)
    with pytest.raises(RateLimited) as err:
        await lim.acquire(limits, 10)
    assert 1 <= int(err.value.headers["retry-after"]) <= 60
    assert "institution a may use 3 requests per minute" in err.value.message


async def test_tokens_are_reserved_then_corrected() -> None:
    lim = LocalLimiter()
    limits = [Limit("key:k", "tpm", 100)]
    res = await lim.acquire(limits, 90)
    assert res.headers["x-ratelimit-remaining-tokens"] == "10"
    await lim.settle(res, 20)  # used far less than reserved
    res2 = await lim.acquire(limits, 90)
    assert res2.headers["x-ratelimit-remaining-tokens"] == "0"  # 20 + 90 > 100: admitted once
    with pytest.raises(RateLimited):
        await lim.acquire(limits, 1)


async def test_a_share_scales_every_limit() -> None:
    lim = LocalLimiter(share=lambda: 0.5)
    limits = [Limit("institution:a", "rpm", 10)]
    for _ in range(5):
        await lim.acquire(limits, 1)
    with pytest.raises(RateLimited):
        await lim.acquire(limits, 1)


async def test_all_scopes_must_have_room_and_nothing_is_charged_on_refusal() -> None:
    lim = LocalLimiter()
    inst = Limit("institution:a", "rpm", 100)
    key = Limit("key:k", "rpm", 1)
    await lim.acquire([inst, key], 1)
    with pytest.raises(RateLimited):
        await lim.acquire([inst, key], 1)
    res = await lim.acquire([inst], 1)
    assert res.headers["x-ratelimit-remaining-requests"] == "98"


async def test_gateway_answers_429_with_headers(gateway_factory: Any, tmp_path: Path) -> None:
    from tests.conftest import federation_dict
    from verbund.config import parse_config

    data = federation_dict(tmp_path)
    data["institutions"][0]["requests_per_minute"] = 2
    async with gateway_factory(parse_config(data)) as gw:
        first = await gw.chat()
        assert first.headers["x-ratelimit-limit-requests"] == "2"
        assert first.headers["x-ratelimit-remaining-requests"] == "1"
        await gw.chat()
        third = await gw.chat()
        assert third.status_code == 429
        assert third.json()["error"]["type"] == "rate_limit_error"
        assert "retry-after" in third.headers
        assert gw.upstream_calls() == 2


async def test_per_key_and_institution_quotas_through_the_admin_api(
    gateway_factory: Any, tmp_path: Path
) -> None:
    async with gateway_factory(make_config(tmp_path)) as gw:
        keys = (await gw.client.get("/admin/keys", headers=gw.admin())).json()["data"]
        key_id = next(k["id"] for k in keys if k["institution"] == "uni-a")
        r = await gw.client.patch(
            f"/admin/keys/{key_id}", json={"requests_per_minute": 1}, headers=gw.admin()
        )
        assert r.status_code == 200
        assert (await gw.chat()).status_code == 200
        assert (await gw.chat()).status_code == 429
        r = await gw.client.patch(
            "/admin/institutions/uni-b", headers=gw.admin(), json={"tokens_per_month": 5}
        )
        assert r.status_code == 200 and r.json()["tokens_per_month"] == 5
        assert (await gw.chat("uni-b")).status_code == 200  # admitted: counter was below
        assert (await gw.chat("uni-b")).status_code == 429
        bad = await gw.client.patch(
            "/admin/institutions/uni-b", headers=gw.admin(), json={"requests_per_minute": -3}
        )
        assert bad.status_code == 400
        audit = (await gw.client.get("/admin/audit", headers=gw.admin())).json()["data"]
        assert {"key.quota", "institution.update"} <= {e["action"] for e in audit}
