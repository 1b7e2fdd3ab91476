"""Events between access points: keys, institutions and site states changed elsewhere.

With one access point the bus is a no-op (:class:`LocalBus`); with Redis, events go over
pub/sub (:class:`RedisBus`), so a key revoked at one access point is refused at all of
them within milliseconds. Handlers must be idempotent: a missed event is repaired by the
periodic resync from the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger("verbund.coordination")

CHANNEL = "verbund:events"
Handler = Callable[[dict[str, Any]], Awaitable[None]]


class EventBus(Protocol):
    async def publish(self, event: dict[str, Any]) -> None: ...
    def subscribe(self, handler: Handler) -> None: ...
    async def run(self) -> None: ...


class LocalBus:
    """One access point: nobody else to tell."""

    def __init__(self) -> None:
        self._handlers: list[Handler] = []

    async def publish(self, event: dict[str, Any]) -> None:
        return None

    def subscribe(self, handler: Handler) -> None:
        self._handlers.append(handler)

    async def run(self) -> None:
        return None


class RedisBus:
    def __init__(self, redis: Redis, origin: str) -> None:
        self._redis = redis
        self._origin = origin
        self._handlers: list[Handler] = []
        self.connected = asyncio.Event()

    async def publish(self, event: dict[str, Any]) -> None:
        try:
            await self._redis.publish(CHANNEL, orjson.dumps({**event, "origin": self._origin}))
        except (RedisError, OSError) as exc:
            log.warning(
                "could not publish %s: %s (peers resync from the store)",
                event.get("type"),
                type(exc).__name__,
            )

    def subscribe(self, handler: Handler) -> None:
        self._handlers.append(handler)

    async def run(self) -> None:
        """Listen forever, reconnecting with back-off when Redis goes away."""
        delay = 0.5
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(CHANNEL)
                self.connected.set()
                delay = 0.5
                async for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    await self._dispatch(message["data"])
            except (RedisError, OSError) as exc:
                self.connected.clear()
                log.warning(
                    "event bus lost Redis (%s); retrying in %.1fs", type(exc).__name__, delay
                )
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    async def _dispatch(self, raw: bytes) -> None:
        try:
            event = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return
        if not isinstance(event, dict) or event.get("origin") == self._origin:
            return
        for handler in self._handlers:
            await handler(event)
