"""Concurrency seats in a real Redis: counted across access points, given back, dropped
when an access point is gone, and a local share while Redis is away."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from redis.asyncio import Redis

from harness.services import RedisServer
from verbund.coordination import RedisSeats, Seat
from verbund.errors import TooManyConcurrent

pytestmark = pytest.mark.real

LIMIT = [Seat("institution:a", 3)]


async def until(cond: Callable[[], object], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not await cond():  # type: ignore[misc]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_seats_are_shared_by_access_points_and_given_back(redis: Redis) -> None:
    west, east = RedisSeats(redis, "ap-west", lambda: 2), RedisSeats(redis, "ap-east", lambda: 2)
    held = [await west.take(LIMIT), await west.take(LIMIT), await east.take(LIMIT)]
    for seats in (west, east):
        with pytest.raises(TooManyConcurrent, match="institution a may have 3"):
            await seats.take(LIMIT)
    held.pop().release()
    held[-1].release()
    held[-1].release()  # once only

    async def one_left() -> bool:
        values = await redis.hgetall("verbund:seats:institution:a")
        return sum(int(v) for v in values.values()) == 1

    await until(one_left)
    await east.take(LIMIT)
    await west.take(LIMIT)
    with pytest.raises(TooManyConcurrent):
        await east.take(LIMIT)


async def test_seats_of_a_dead_access_point_are_dropped(redis: Redis) -> None:
    dead, alive = RedisSeats(redis, "ap-dead", lambda: 2), RedisSeats(redis, "ap-alive", lambda: 2)
    for _ in range(3):
        await dead.take(LIMIT)  # and then it dies, holding them
    with pytest.raises(TooManyConcurrent):
        await alive.take(LIMIT)
    await alive.prune({"ap-alive"})
    assert await redis.hkeys("verbund:seats:institution:a") == []
    await alive.take(LIMIT)


async def test_without_redis_each_access_point_gets_its_share(
    redis: Redis, redis_server: RedisServer
) -> None:
    seats = RedisSeats(redis, "ap-1", lambda: 3)
    redis_server.stop()
    six = [Seat("institution:a", 6)]
    await seats.take(six)
    await seats.take(six)
    with pytest.raises(TooManyConcurrent):  # a third of 6
        await seats.take(six)
