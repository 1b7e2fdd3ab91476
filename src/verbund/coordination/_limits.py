"""Quotas: requests and tokens per minute, tokens per month, per institution and per key.

Counters live in fixed windows (the current minute, the current month, UTC). A request
is admitted when every applicable counter has room, and then charged atomically in all
of them (one Lua script in Redis, so several access points share the counts exactly):

* requests: admitted while ``count + 1 <= limit``;
* tokens: a reservation is charged up front (the prompt estimate plus ``max_tokens`` or
  the default) and admitted while ``count < limit``; after the answer the reservation is
  corrected to the tokens actually used.

Overshoot bound for tokens: the counter can pass the limit by at most the reservation of
the one request admitted last, plus, for requests still in flight, what they use beyond
their reservation (only possible without ``max_tokens``). Requests never overshoot.

Without Redis (one access point) the same logic runs in memory. When Redis is
unreachable each access point falls back to that local logic with a conservative share
of every limit (the limit divided by the number of access points last seen alive) and
says so in its log and in ``/readyz``.

Windows go by Redis's clock (``TIME``, measured every :data:`CLOCK_SYNC_SECONDS` as an
offset to the local clock), so access points whose clocks differ still count in the
same minute and month; without Redis the local clock is the only clock. While Redis is
away the offset last measured still applies.

A monthly counter in the fallback does not start from zero, which would grant up to a
whole month again: it starts from the last value Redis reported for it (each admission
returns the counters), scaled to this access point's share, and what is used in the
fallback is added to Redis's counter when Redis is back. A monthly counter this access
point has never read from Redis (it has not served that scope since it started) is
unknown; it may use :data:`UNSEEN_MONTH_FRACTION` of its share of the limit until Redis
is back. Seeding from the reading keeps legitimate traffic flowing through an outage,
which refusing would not; the reading can only be too low by what other access points
used after it, and at most their shares of what is left are granted on top.
"""

from __future__ import annotations

import calendar
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from verbund.errors import RateLimited

log = logging.getLogger("verbund.coordination")

CLOCK_SYNC_SECONDS = 10.0
UNSEEN_MONTH_FRACTION = 0.05

Kind = Literal["rpm", "tpm", "tpmonth"]
_LUA = """
local n = tonumber(ARGV[1])
local cur = {}
for i = 1, n do
  local b = 1 + (i - 1) * 4
  local limit, inc, kind = tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]), ARGV[b + 3]
  local c = tonumber(redis.call('GET', KEYS[i]) or '0')
  if (kind == 'r' and c + inc > limit) or (kind == 't' and c >= limit) then
    return {0, i, c}
  end
end
for i = 1, n do
  local b = 1 + (i - 1) * 4
  cur[i] = redis.call('INCRBY', KEYS[i], tonumber(ARGV[b + 2]))
  redis.call('EXPIRE', KEYS[i], tonumber(ARGV[b + 4]))
end
return {1, 0, 0, unpack(cur)}
"""


@dataclass(frozen=True, slots=True)
class Limit:
    scope: str  # "institution:uni-a" or "key:key_..."
    kind: Kind
    limit: int


@dataclass(slots=True)
class Reservation:
    counters: list[tuple[str, Limit]]
    tokens: int
    headers: dict[str, str] = field(default_factory=dict)
    local: bool = False


def window(kind: Kind, now: float) -> tuple[str, int, float]:
    """(window id, ttl seconds, seconds until the window resets)."""
    if kind == "tpmonth":
        d = datetime.fromtimestamp(now, UTC)
        days = calendar.monthrange(d.year, d.month)[1]
        month_end = datetime(d.year, d.month, days, tzinfo=UTC).timestamp() + 86400
        return f"{d.year:04d}{d.month:02d}", 40 * 86400, month_end - now
    minute = int(now // 60)
    return str(minute), 120, 60 - now % 60


def counter_key(limit: Limit, now: float) -> str:
    return f"verbund:quota:{limit.scope}:{limit.kind}:{window(limit.kind, now)[0]}"


def _headers(values: list[tuple[Limit, int]], now: float) -> dict[str, str]:
    out: dict[str, str] = {}
    for suffix, kinds in (("requests", ("rpm",)), ("tokens", ("tpm", "tpmonth"))):
        relevant = [(lim, v) for lim, v in values if lim.kind in kinds]
        if not relevant:
            continue
        lim, v = min(relevant, key=lambda lv: lv[0].limit - lv[1])
        out[f"x-ratelimit-limit-{suffix}"] = str(lim.limit)
        out[f"x-ratelimit-remaining-{suffix}"] = str(max(0, lim.limit - v))
        out[f"x-ratelimit-reset-{suffix}"] = f"{window(lim.kind, now)[2]:.0f}s"
    return out


def _refusal(lim: Limit, now: float) -> RateLimited:
    reset = max(1, round(window(lim.kind, now)[2]))
    what = {
        "rpm": "requests per minute",
        "tpm": "tokens per minute",
        "tpmonth": "tokens per month",
    }[lim.kind]
    who = lim.scope.replace(":", " ", 1)
    return RateLimited(
        f"Quota exceeded: {who} may use {lim.limit} {what}. Try again in {reset}s.",
        headers={"retry-after": str(reset)},
    )


class Limiter(Protocol):
    degraded: bool
    skew: float | None  # how far this host's clock is ahead of the counters' clock

    async def acquire(self, limits: list[Limit], tokens: int) -> Reservation: ...
    async def settle(self, res: Reservation, actual_tokens: int) -> None: ...


class LocalLimiter:
    """In-memory counters for one access point (or a degraded share of the federation's)."""

    degraded = False
    skew: float | None = None  # the local clock is the only clock

    def __init__(
        self, share: Callable[[], float] = lambda: 1.0, clock: Callable[[], float] = time.time
    ) -> None:
        self._counts: dict[str, int] = {}
        self._share = share
        self._clock = clock
        self._minute = 0

    def _gc(self, now: float) -> None:
        minute = int(now // 60)
        if minute != self._minute:
            self._minute = minute
            keep = (f":{minute}", f":{minute - 1}")
            self._counts = {
                k: v for k, v in self._counts.items() if ":tpmonth:" in k or k.endswith(keep)
            }

    def seed(self, key: str, value: int) -> None:
        """Start a counter at ``value`` unless it has one already (a monthly counter taken
        over from Redis)."""
        self._counts.setdefault(key, value)

    def take(self, key: str) -> int:
        """Remove a counter; returns its value (0 if it had none)."""
        return self._counts.pop(key, 0)

    def keys(self, kind: Kind) -> list[str]:
        return [k for k in self._counts if f":{kind}:" in k]

    def counted(self, limit: Limit, now: float | None = None) -> int:
        """The counter of ``limit`` in the window of ``now`` (default: the current one)."""
        return self._counts.get(counter_key(limit, self._clock() if now is None else now), 0)

    async def acquire(self, limits: list[Limit], tokens: int) -> Reservation:
        now = self._clock()
        self._gc(now)
        share = self._share()
        scaled = [Limit(lim.scope, lim.kind, max(1, int(lim.limit * share))) for lim in limits]
        keys = [counter_key(lim, now) for lim in scaled]
        for key, lim in zip(keys, scaled, strict=True):
            cur = self._counts.get(key, 0)
            inc = 1 if lim.kind == "rpm" else tokens
            if (lim.kind == "rpm" and cur + inc > lim.limit) or (
                lim.kind != "rpm" and cur >= lim.limit
            ):
                raise _refusal(lim, now)
        values = []
        for key, lim in zip(keys, scaled, strict=True):
            inc = 1 if lim.kind == "rpm" else tokens
            self._counts[key] = self._counts.get(key, 0) + inc
            values.append((lim, self._counts[key]))
        return Reservation(
            list(zip(keys, scaled, strict=True)), tokens, _headers(values, now), local=True
        )

    async def settle(self, res: Reservation, actual_tokens: int) -> None:
        delta = actual_tokens - res.tokens
        for key, lim in res.counters:
            if lim.kind != "rpm" and key in self._counts:
                self._counts[key] += delta


class RedisLimiter:
    """Exact shared counters in Redis; a local share of each limit while Redis is away."""

    RETRY_REDIS_AFTER = 1.0

    def __init__(
        self,
        redis: Redis,
        access_points: Callable[[], int],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self._script = redis.register_script(_LUA)
        self._local_clock = clock
        self._access_points = access_points
        self._fallback = LocalLimiter(share=self._share, clock=self.now)
        self._down_since: float | None = None
        self.degraded = False
        self.offset = 0.0  # Redis's clock minus ours
        self.skew: float | None = None  # how far our clock is ahead of Redis's
        self._synced_at = float("-inf")  # monotonic
        self._month_seen: dict[str, int] = {}  # monthly counter key -> last value in Redis
        self._month_base: dict[str, int] = {}  # fallback counter key -> value it started at

    def _share(self) -> float:
        return 1.0 / max(1, self._access_points())

    def now(self) -> float:
        """Redis's time, from the local clock and the last measured offset."""
        return self._local_clock() + self.offset

    async def _sync_clock(self) -> None:
        if time.monotonic() - self._synced_at < CLOCK_SYNC_SECONDS:
            return
        before = self._local_clock()
        seconds, micros = await self._redis.time()
        after = self._local_clock()
        self.offset = seconds + micros / 1e6 - (before + after) / 2
        self.skew = -self.offset
        self._synced_at = time.monotonic()

    async def acquire(self, limits: list[Limit], tokens: int) -> Reservation:
        if not limits:
            return Reservation([], tokens)
        if self._down_since is not None and (
            time.monotonic() - self._down_since < self.RETRY_REDIS_AFTER
        ):
            return await self._local(limits, tokens)
        try:
            await self._sync_clock()
            now = self.now()
            keys = [counter_key(lim, now) for lim in limits]
            args: list[int | str] = [len(limits)]
            for lim in limits:
                inc = 1 if lim.kind == "rpm" else tokens
                ttl = window(lim.kind, now)[1]
                args += [lim.limit, inc, "r" if lim.kind == "rpm" else "t", ttl]
            result = await self._script(keys=keys, args=args)
            await self._recover()
        except (RedisError, OSError) as exc:
            self._degrade(exc)
            return await self._local(limits, tokens)
        if int(result[0]) == 0:
            i = int(result[1]) - 1
            if limits[i].kind == "tpmonth":
                self._month_seen[keys[i]] = int(result[2])
            raise _refusal(limits[i], now)
        values = [(lim, int(v)) for lim, v in zip(limits, result[3:], strict=True)]
        for key, (lim, v) in zip(keys, values, strict=True):
            if lim.kind == "tpmonth":
                self._month_seen[key] = v
        return Reservation(list(zip(keys, limits, strict=True)), tokens, _headers(values, now))

    async def _local(self, limits: list[Limit], tokens: int) -> Reservation:
        """The fallback, its monthly counters seeded from the last reading in Redis."""
        now = self.now()
        share = self._share()
        for lim in limits:
            if lim.kind != "tpmonth":
                continue
            key = counter_key(lim, now)
            seen = self._month_seen.get(key)
            if seen is None:  # never read: allow a small part of the share only
                start = int(lim.limit * share * (1 - UNSEEN_MONTH_FRACTION))
            else:
                start = int(seen * share)
            if key not in self._month_base:  # the fallback's counter has the same key
                self._month_base[key] = start
                self._fallback.seed(key, start)
        return await self._fallback.acquire(limits, tokens)

    async def settle(self, res: Reservation, actual_tokens: int) -> None:
        if res.local:
            await self._fallback.settle(res, actual_tokens)
            return
        delta = actual_tokens - res.tokens
        if delta == 0:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key, lim in res.counters:
                    if lim.kind != "rpm":
                        pipe.incrby(key, delta)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            self._degrade(exc)

    def _degrade(self, exc: BaseException) -> None:
        if not self.degraded:
            log.error(
                "Redis unreachable (%s): quotas fall back to a local share of each limit",
                type(exc).__name__,
            )
        self.degraded = True
        self._down_since = time.monotonic()

    async def _recover(self) -> None:
        if not self.degraded:
            return
        log.warning("Redis reachable again: quotas are shared exactly again")
        self.degraded = False
        self._down_since = None
        # what the fallback used of monthly quotas counts in Redis too
        used = {
            key: self._fallback.take(key) - self._month_base.pop(key, 0)
            for key in self._fallback.keys("tpmonth")
        }
        self._month_base.clear()
        used = {k: v for k, v in used.items() if v > 0}
        if used:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key, n in used.items():
                    pipe.incrby(key, n)
                    pipe.expire(key, window("tpmonth", self.now())[1])
                await pipe.execute()
