"""Quotas in a real Redis: windows by Redis's clock, and a Redis outage that does not
hand out a month's tokens again."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio import Redis

from harness.services import RedisServer
from verbund.coordination import Limit
from verbund.coordination._limits import RedisLimiter, counter_key
from verbund.errors import RateLimited

pytestmark = pytest.mark.real


async def test_access_points_with_skewed_clocks_count_in_one_window(redis: Redis) -> None:
    """One access point's clock is 90 s ahead: without Redis's clock its requests would
    count in another minute, and the two together would get twice the quota."""
    on_time = RedisLimiter(redis, lambda: 2)
    ahead = RedisLimiter(redis, lambda: 2, clock=lambda: time.time() + 90)
    limits = [Limit("institution:a", "rpm", 2)]
    await on_time.acquire(limits, 1)
    await on_time.acquire(limits, 1)
    with pytest.raises(RateLimited):
        await ahead.acquire(limits, 1)
    assert ahead.skew is not None and 89 < ahead.skew < 91
    assert on_time.skew is not None and abs(on_time.skew) < 1


async def test_monthly_quota_fallback_starts_from_the_last_reading(
    redis: Redis, redis_server: RedisServer
) -> None:
    lim = RedisLimiter(redis, lambda: 1)
    month = [Limit("institution:a", "tpmonth", 1000)]
    res = await lim.acquire(month, 100)
    await lim.settle(res, 900)  # 900 of 1000 tokens used this month
    await lim.acquire(month, 1)  # the last reading: 901
    redis_server.stop()
    admitted = 0
    with pytest.raises(RateLimited):
        for _ in range(20):
            await lim.acquire(month, 100)
            admitted += 1
    assert lim.degraded
    assert admitted == 1  # 901 < 1000: one more; not a fresh month of 10 more
    # an institution this access point has not read yet gets a small part only
    unseen = [Limit("institution:b", "tpmonth", 1000)]
    await lim.acquire(unseen, 10)
    with pytest.raises(RateLimited):
        for _ in range(20):
            await lim.acquire(unseen, 10)
    # back: what the fallback used counts in Redis's (new, empty) counter
    redis_server.start()
    deadline = time.monotonic() + 10
    while lim.degraded:
        assert time.monotonic() < deadline, "Redis not used again"
        await asyncio.sleep(0.05)
        await lim.acquire([Limit("institution:c", "rpm", 1000)], 1)
    assert int(await redis.get(counter_key(month[0], lim.now()))) == 100
