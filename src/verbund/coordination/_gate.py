"""Quota reservations held for requests in flight, settled from their usage records."""

from __future__ import annotations

import asyncio
import logging

from verbund.accounting import UsageRecord
from verbund.coordination._limits import Limit, Limiter, Reservation

log = logging.getLogger("verbund.coordination")


class QuotaGate:
    def __init__(self, limiter: Limiter) -> None:
        self.limiter = limiter
        self._held: dict[str, Reservation] = {}
        self._pending: set[asyncio.Task[None]] = set()

    async def charge(self, limits: list[Limit]) -> Reservation:
        """Count one request against request limits (nothing to settle later); raises
        RateLimited when one is used up. Done before the body is read."""
        if not limits:  # the usual case: nothing to count, no work on the hot path
            return Reservation([], 0)
        return await self.limiter.acquire(limits, 0)

    async def admit(self, request_id: str, limits: list[Limit], tokens: int) -> Reservation:
        """Reserve ``tokens`` up front; raises RateLimited when a quota is used up. The
        reservation is settled from the request's usage record."""
        if not limits:
            return Reservation([], tokens)
        res = await self.limiter.acquire(limits, tokens)
        if res.counters:
            self._held[request_id] = res
        return res

    def settle(self, rec: UsageRecord) -> None:
        """Correct the reservation to the tokens the request really used (off the hot path)."""
        res = self._held.pop(rec.request_id, None)
        if res is None:
            return
        task = asyncio.get_running_loop().create_task(
            self.limiter.settle(res, rec.prompt_tokens + rec.completion_tokens)
        )
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def drain(self) -> None:
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
