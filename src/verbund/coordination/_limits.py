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

    async def acquire(self, limits: list[Limit], tokens: int) -> Reservation: ...
    async def settle(self, res: Reservation, actual_tokens: int) -> None: ...


class LocalLimiter:
    """In-memory counters for one access point (or a degraded share of the federation's)."""

    degraded = False

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

    def __init__(self, redis: Redis, access_points: Callable[[], int]) -> None:
        self._redis = redis
        self._script = redis.register_script(_LUA)
        self._fallback = LocalLimiter(share=lambda: 1.0 / max(1, access_points()))
        self._down_since: float | None = None
        self.degraded = False

    async def acquire(self, limits: list[Limit], tokens: int) -> Reservation:
        if not limits:
            return Reservation([], tokens)
        now = time.time()
        if self._down_since is not None and now - self._down_since < self.RETRY_REDIS_AFTER:
            return await self._fallback.acquire(limits, tokens)
        keys = [counter_key(lim, now) for lim in limits]
        args: list[int | str] = [len(limits)]
        for lim in limits:
            inc = 1 if lim.kind == "rpm" else tokens
            args += [lim.limit, inc, "r" if lim.kind == "rpm" else "t", window(lim.kind, now)[1]]
        try:
            result = await self._script(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            self._degrade(exc, now)
            return await self._fallback.acquire(limits, tokens)
        self._recover()
        if int(result[0]) == 0:
            raise _refusal(limits[int(result[1]) - 1], now)
        values = [(lim, int(v)) for lim, v in zip(limits, result[3:], strict=True)]
        return Reservation(list(zip(keys, limits, strict=True)), tokens, _headers(values, now))

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
            self._degrade(exc, time.time())

    def _degrade(self, exc: BaseException, now: float) -> None:
        if not self.degraded:
            log.error(
                "Redis unreachable (%s): quotas fall back to a local share of each limit",
                type(exc).__name__,
            )
        self.degraded = True
        self._down_since = now

    def _recover(self) -> None:
        if self.degraded:
            log.warning("Redis reachable again: quotas are shared exactly again")
        self.degraded = False
        self._down_since = None
