"""Concurrency limits: how many requests a key or an institution may have open at once.

Rate quotas bound how much a tenant asks for per minute; they do not stop one tenant
from holding many slow requests open (slow uploads, streams read at a byte a second)
and so taking every slot of an access point. A *seat* is one open request in one scope
(``key:...``, ``institution:...``); a request takes a seat in each of its scopes before
its body is read and gives them back when its answer has ended (a stream: its last
byte), whatever the outcome.

With Redis the seats are counted across all access points: one hash per scope whose
fields are the access points' own counts, checked and taken for every scope in one
script. Fields of an access point that died without giving its seats back are removed
when that access point is no longer seen alive (:meth:`RedisSeats.forget_others`), and
an access point drops its own fields when it starts. When Redis is unreachable each
access point falls back to a share of every limit, as the rate quotas do.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from verbund.errors import TooManyConcurrent

__all__ = ["LocalSeats", "RedisSeats", "Seat", "Seats", "Taken"]

log = logging.getLogger("verbund.coordination")

PREFIX = "verbund:seats:"
TTL_SECONDS = 3600  # a scope idle this long forgets its counts (a safety net)

_TAKE = """
local ap = ARGV[1]
local n = #KEYS
for i = 1, n do
  local total = 0
  for _, v in ipairs(redis.call('HVALS', KEYS[i])) do total = total + tonumber(v) end
  if total + 1 > tonumber(ARGV[i + 1]) then return i end
end
for i = 1, n do
  redis.call('HINCRBY', KEYS[i], ap, 1)
  redis.call('EXPIRE', KEYS[i], tonumber(ARGV[n + 2]))
end
return 0
"""


@dataclass(frozen=True, slots=True)
class Seat:
    scope: str  # "key:key_..." or "institution:uni-a"
    limit: int


class Taken:
    """Seats held by one request; :meth:`release` gives them back once."""

    __slots__ = ("_give_back", "_held", "seats")

    def __init__(self, seats: list[Seat], give_back: Callable[[list[Seat]], None]) -> None:
        self.seats = seats
        self._give_back = give_back
        self._held = bool(seats)

    def release(self) -> None:
        if self._held:
            self._held = False
            self._give_back(self.seats)


class Seats(Protocol):
    async def take(self, seats: list[Seat]) -> Taken:
        """Take a seat in every scope, or none (raises :class:`TooManyConcurrent`)."""
        ...


def _refusal(seat: Seat) -> TooManyConcurrent:
    who = seat.scope.replace(":", " ", 1)
    return TooManyConcurrent(
        f"Too many requests open at once: {who} may have {seat.limit} requests in progress. "
        "Retry when one has finished.",
        headers={"retry-after": "1"},
    )


class LocalSeats:
    """Seats of this access point alone (or its share of the federation's while Redis
    is away: ``share`` is the fraction of each limit it may use)."""

    def __init__(self, share: Callable[[], float] = lambda: 1.0) -> None:
        self._share = share
        self.counts: dict[str, int] = {}

    def _limit(self, seat: Seat) -> int:
        return max(1, math.floor(seat.limit * self._share()))

    async def take(self, seats: list[Seat]) -> Taken:
        return self.take_now(seats)

    def take_now(self, seats: list[Seat]) -> Taken:
        for seat in seats:
            if self.counts.get(seat.scope, 0) + 1 > self._limit(seat):
                raise _refusal(seat)
        for seat in seats:
            self.counts[seat.scope] = self.counts.get(seat.scope, 0) + 1
        return Taken(seats, self._give_back)

    def _give_back(self, seats: list[Seat]) -> None:
        for seat in seats:
            left = self.counts.get(seat.scope, 0) - 1
            if left > 0:
                self.counts[seat.scope] = left
            else:
                self.counts.pop(seat.scope, None)


class RedisSeats:
    """Seats counted across access points in Redis; a local share while it is away."""

    RETRY_REDIS_AFTER = 1.0

    def __init__(self, redis: Redis, access_point: str, access_points: Callable[[], int]) -> None:
        self._redis = redis
        self._ap = access_point
        self._script = redis.register_script(_TAKE)
        self._fallback = LocalSeats(share=lambda: 1.0 / max(1, access_points()))
        self._down_since: float | None = None
        self._pending: set[asyncio.Task[None]] = set()

    async def take(self, seats: list[Seat]) -> Taken:
        if not seats:
            return Taken([], lambda s: None)
        now = time.monotonic()
        if self._down_since is not None and now - self._down_since < self.RETRY_REDIS_AFTER:
            return self._fallback.take_now(seats)
        keys = [PREFIX + s.scope for s in seats]
        try:
            refused = int(
                await self._script(
                    keys=keys, args=[self._ap, *(s.limit for s in seats), TTL_SECONDS]
                )
            )
        except (RedisError, OSError) as exc:
            self._degrade(exc, now)
            return self._fallback.take_now(seats)
        self._down_since = None
        if refused:
            raise _refusal(seats[refused - 1])
        return Taken(seats, self._give_back)

    def _give_back(self, seats: list[Seat]) -> None:
        task = asyncio.get_running_loop().create_task(self._decrement(seats))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _decrement(self, seats: list[Seat]) -> None:
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for seat in seats:
                    pipe.hincrby(PREFIX + seat.scope, self._ap, -1)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            # the count stays too high until this access point restarts or is seen gone
            log.warning("seats could not be given back in Redis: %s", type(exc).__name__)

    async def prune(self, alive: Collection[str]) -> None:
        """Drop the counts of access points not in ``alive`` from every scope: those that
        died holding seats. Called at start (with the others' names only, so this access
        point's leftovers from before a restart go too) and with every resync."""
        try:
            async for key in self._redis.scan_iter(match=PREFIX + "*", count=500):
                gone = [f for f in await self._redis.hkeys(key) if _text(f) not in alive]
                if gone:
                    await self._redis.hdel(key, *gone)
        except (RedisError, OSError) as exc:
            log.warning("stale seats could not be dropped: %s", type(exc).__name__)

    async def drain(self) -> None:
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    def _degrade(self, exc: BaseException, now: float) -> None:
        if self._down_since is None:
            log.error(
                "Redis unreachable (%s): concurrency limits fall back to a local share",
                type(exc).__name__,
            )
        self._down_since = now


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
