"""Usage reports by UTC day and month, with since/until, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.accounting.conftest import insert, usage
from verbund.accounting import month_of, parse_month, usage_report
from verbund.store import Store


def at(iso: str) -> float:
    return datetime.fromisoformat(iso).replace(tzinfo=UTC).timestamp()


async def test_day_and_month_buckets_are_utc_and_sorted(store: Store) -> None:
    await insert(
        store,
        usage(at("2024-12-31T23:59:59.9999"), prompt=1),  # floors into the old year
        usage(at("2025-01-01T00:00:00"), prompt=2),
        usage(at("2025-01-01T23:30:00"), "uni-b", prompt=4, endpoint="/v2/models/iris/infer"),
        usage(at("2025-02-28T12:00:00"), prompt=8, status="error"),
    )
    rows = await usage_report(store, ["month", "day"])
    assert [(r["month"], r["day"], r["requests"], r["prompt_tokens"]) for r in rows] == [
        ("2024-12", "2024-12-31", 1, 1),
        ("2025-01", "2025-01-01", 2, 6),
        ("2025-02", "2025-02-28", 1, 8),
    ]
    assert rows[2]["failed"] == 1
    by_endpoint = await usage_report(store, ["month", "endpoint"])
    assert [(r["month"], r["endpoint"], r["requests"]) for r in by_endpoint] == [
        ("2024-12", "/v1/chat/completions", 1),
        ("2025-01", "/v1/chat/completions", 1),
        ("2025-01", "/v2/models/iris/infer", 1),
        ("2025-02", "/v1/chat/completions", 1),
    ]


async def test_since_is_inclusive_and_until_exclusive(store: Store) -> None:
    await insert(
        store,
        usage(at("2025-01-31T23:59:59")),
        usage(at("2025-02-01T00:00:00"), "uni-b"),
        usage(at("2025-02-15T00:00:00"), "uni-b"),
        usage(at("2025-03-01T00:00:00"), "uni-c"),
    )
    start, end = parse_month("2025-02")
    rows = await usage_report(store, ["institution", "month"], since=start, until=end)
    assert [(r["institution"], r["month"], r["requests"]) for r in rows] == [
        ("uni-b", "2025-02", 2)
    ]
    rows = await usage_report(store, ["day"], since=start, until=end, institution_id="uni-b")
    assert [r["day"] for r in rows] == ["2025-02-01", "2025-02-15"]


def test_parse_month() -> None:
    assert parse_month("2024-12") == (at("2024-12-01T00:00:00"), at("2025-01-01T00:00:00"))
    assert month_of(at("2025-03-31T23:59:59.9999")) == "2025-03"
    for bad in ("2025-13", "2025-1", "25-01", "2025-01-01", ""):
        with pytest.raises(ValueError):
            parse_month(bad)
