"""Which access points are alive: each announces itself with a heartbeat that expires."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger("verbund.coordination")

PREFIX = "verbund:ap:"


class Presence(Protocol):
    async def live(self) -> list[dict[str, Any]]: ...
    async def run(self) -> None: ...


class LocalPresence:
    def __init__(self, name: str) -> None:
        self._me = {"name": name, "started": time.time()}

    async def live(self) -> list[dict[str, Any]]:
        return [{**self._me, "last_seen": time.time()}]

    async def run(self) -> None:
        return None


class RedisPresence:
    def __init__(self, redis: Redis, name: str, interval: float = 2.0) -> None:
        self._redis = redis
        self._name = name
        self._interval = interval
        self._started = time.time()
        self.last_count = 1

    async def beat(self) -> None:
        me = {"name": self._name, "started": self._started, "last_seen": time.time()}
        await self._redis.set(PREFIX + self._name, orjson.dumps(me), ex=int(self._interval * 3) + 1)

    async def live(self) -> list[dict[str, Any]]:
        try:
            keys = [k async for k in self._redis.scan_iter(match=PREFIX + "*", count=100)]
            values = await self._redis.mget(keys) if keys else []
        except (RedisError, OSError):
            return [{"name": self._name, "started": self._started, "last_seen": time.time()}]
        out = [orjson.loads(v) for v in values if v]
        self.last_count = max(1, len(out))
        return sorted(out, key=lambda a: str(a["name"]))

    async def run(self) -> None:
        while True:
            try:
                await self.beat()
                await self.live()
            except (RedisError, OSError) as exc:
                log.warning("heartbeat failed: %s", type(exc).__name__)
            await asyncio.sleep(self._interval)
