"""Budgets: month-to-date spend in memory, headers from 80 %, a hard stop at 100 %."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from tests.accounting.conftest import insert, usage
from tests.conftest import GatewayFactory, federation_dict
from verbund.accounting import BudgetService, PriceBook, UsageRecorder
from verbund.config import InstitutionConfig, SiteConfig, parse_config
from verbund.errors import BudgetExceeded
from verbund.store import Store

NOW = datetime(2025, 3, 10, 12, 0, tzinfo=UTC).timestamp()
SITES = [
    SiteConfig.model_validate(
        {
            "name": "west",
            "prices": {"models": {"smol": {"input_per_million": 1000, "output_per_million": 2000}}},
        }
    ),
    SiteConfig(name="ost"),  # no prices
]


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def inst(**budget: object) -> InstitutionConfig:
    return InstitutionConfig.model_validate({"id": "uni-a", **budget})


def service(store: Store | None = None, clock: Clock | None = None) -> BudgetService:
    return BudgetService(store, PriceBook(SITES), clock=clock or Clock())  # type: ignore[arg-type]


def test_no_budget_no_headers() -> None:
    b = service()
    b.observe(usage(NOW, prompt=10**6))
    assert b.check(inst()) == {}


def test_token_budget_headers_and_hard_stop() -> None:
    b = service()
    tokens = inst(budget_tokens_per_month=1000, budget_hard_stop=True)
    assert b.check(tokens) == {"x-verbund-budget-used": "0.00"}
    b.observe(usage(NOW, prompt=500, completion=290))
    assert b.check(tokens) == {"x-verbund-budget-used": "0.79"}
    b.observe(usage(NOW, prompt=10, completion=0))
    headers = b.check(tokens)
    assert headers["x-verbund-budget-used"] == "0.80"
    assert headers["x-verbund-budget-warning"] == "80% of the monthly budget used"
    b.observe(usage(NOW, prompt=200, completion=0))
    with pytest.raises(BudgetExceeded) as exc:
        b.check(tokens)
    err = exc.value
    assert (err.status, err.type, err.code) == (429, "insufficient_quota", "insufficient_quota")
    assert "1000 of 1000 tokens" in err.message and "2025-04-01" in err.message
    assert err.headers["x-verbund-budget-used"] == "1.00"
    # without a hard stop: only a warning
    soft = inst(budget_tokens_per_month=1000)
    assert b.check(soft)["x-verbund-budget-warning"] == "monthly budget used up (100%)"


def test_money_budget_uses_the_site_prices() -> None:
    b = service()
    money = inst(budget_per_month=10, budget_hard_stop=True)
    # 4000 in x 1000/M + 1000 out x 2000/M = 4 + 2 = 6 EUR
    b.observe(usage(NOW, prompt=4000, completion=1000))
    b.observe(usage(NOW, site="ost", prompt=10**6))  # unpriced site: tokens, no money
    assert b.spend("uni-a").cost == Decimal(6)
    assert b.spend("uni-a").tokens == 5000 + 10**6 + 5
    assert b.check(money)["x-verbund-budget-used"] == "0.60"
    # both budgets: the larger share decides
    both = inst(budget_per_month=10, budget_tokens_per_month=2 * 10**6)
    assert b.check(both)["x-verbund-budget-used"] == "0.60"
    b.observe(usage(NOW, prompt=4000, completion=0))
    with pytest.raises(BudgetExceeded, match=r"10\.00 of 10\.00 EUR"):
        b.check(money)


def test_failed_and_other_month_records_do_not_count() -> None:
    b = service()
    b.observe(usage(NOW, prompt=100, status="error"))
    b.observe(usage(NOW, site="", prompt=100, status="rejected"))
    b.observe(usage(datetime(2025, 2, 28, 23, 59, tzinfo=UTC).timestamp(), prompt=100))
    b.observe(usage(NOW, prompt=1, completion=1, status="incomplete"))
    assert b.spend("uni-a").tokens == 2


def test_a_new_month_starts_from_zero() -> None:
    clock = Clock()
    b = service(clock=clock)
    b.observe(usage(NOW, prompt=900, completion=0))
    capped = inst(budget_tokens_per_month=1000)
    assert b.check(capped)["x-verbund-budget-used"] == "0.90"
    clock.now = datetime(2025, 4, 1, tzinfo=UTC).timestamp()
    assert b.check(capped) == {"x-verbund-budget-used": "0.00"}


async def test_load_counts_every_access_point_once(store: Store, tmp_path: Path) -> None:
    recorder = UsageRecorder(store, tmp_path / "spool")
    b = BudgetService(store, PriceBook(SITES), flush=recorder.flush, clock=Clock())
    # another access point's records, already in the store; one from last month
    await insert(
        store,
        usage(NOW - 3600, access_point="ap-2", prompt=100, completion=0),
        usage(datetime(2025, 2, 1, tzinfo=UTC).timestamp(), access_point="ap-2", prompt=50),
    )
    # this access point's records: recorded (spool) and observed, not yet flushed
    for _ in range(3):
        rec = usage(NOW, prompt=10, completion=0)
        recorder.record(rec)
        b.observe(rec)
    assert b.spend("uni-a").tokens == 30
    await b.load()
    assert b.spend("uni-a").tokens == 130
    await b.load()  # a second refresh counts nothing twice
    assert b.spend("uni-a").tokens == 130
    rec = usage(NOW, prompt=7, completion=0)
    recorder.record(rec)
    b.observe(rec)
    assert b.spend("uni-a").tokens == 137
    await b.load()
    assert b.spend("uni-a").tokens == 137
    await recorder.aclose()


async def test_gateway_answers_with_budget_headers_and_stops(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    data = federation_dict(tmp_path)
    # each fake answer uses 7 + 4 = 11 tokens
    data["institutions"][0].update(budget_tokens_per_month=25, budget_hard_stop=True)
    data["institutions"][1].update(budget_tokens_per_month=12)
    async with gateway_factory(parse_config(data)) as gw:
        first = await gw.chat()
        assert first.status_code == 200
        assert first.headers["x-verbund-budget-used"] == "0.00"
        second = await gw.chat()
        assert second.headers["x-verbund-budget-used"] == "0.44"
        assert "x-verbund-budget-warning" not in second.headers
        third = await gw.chat(stream=True)  # 9 + 5 = 14 tokens in the fake stream
        assert third.status_code == 200 and third.headers["x-verbund-budget-used"] == "0.88"
        assert third.headers["x-verbund-budget-warning"] == "88% of the monthly budget used"
        calls = gw.upstream_calls()
        refused = await gw.chat()
        assert refused.status_code == 429
        assert refused.json()["error"]["type"] == "insufficient_quota"
        assert refused.json()["error"]["code"] == "insufficient_quota"
        assert refused.headers["x-verbund-budget-used"] == "1.44"
        assert gw.upstream_calls() == calls  # refused before any backend was called
        # uni-b has no hard stop: over budget it is warned, not refused
        await gw.chat("uni-b")
        near = await gw.chat("uni-b")
        assert near.headers["x-verbund-budget-warning"] == "92% of the monthly budget used"
        over = await gw.chat("uni-b")
        assert over.status_code == 200
        assert over.headers["x-verbund-budget-warning"] == "monthly budget used up (183%)"
        listed = (await gw.client.get("/admin/budgets", headers=gw.admin())).json()
        a = next(x for x in listed["data"] if x["institution"] == "uni-a")
        assert a["tokens"] == 36 and a["used"] == 1.44 and a["budget_hard_stop"] is True
