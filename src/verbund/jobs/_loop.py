"""The job loop of an agent and of an access point: one step for every unfinished job each
poll interval, sooner when a job is created, rarer while there is none."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from verbund.store import STORE_FAILURES

log = logging.getLogger("verbund.jobs")

IDLE_POLLS = 10  # with no job to step, the loop looks at the store this much less often


async def run_loop(
    step: Callable[[], Awaitable[int]], interval: float, woken: asyncio.Event
) -> None:
    """Run ``step`` (how many jobs it looked at) forever; a store that is away is retried
    at the next round; ``woken`` set (a new job) starts the next round at once."""
    while True:
        active = 1
        woken.clear()
        try:
            active = await step()
        except STORE_FAILURES as exc:
            log.warning("job loop: %s", type(exc).__name__)
        wait = interval if active else interval * IDLE_POLLS
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(woken.wait(), wait)
