"""How many batch items may go to which backend now.

Batch work only takes spare capacity. A backend gets another item while three limits
all allow it:

- utilisation: its requests in flight (interactive and batch, plus batch items being
  started) stay below ``batch.utilisation_threshold`` of its ``max_concurrency``;
- the adaptive per-backend limit of :class:`AdaptiveLimiter`, which backs off when the
  backend slows down or signals overload;
- this access point's own event loop is on time: interactive requests share it, and
  while it runs late more batch work would make every interactive answer later.
"""

from __future__ import annotations

import asyncio
import math
import time

from verbund.batch._execute import Execution
from verbund.batch._limiter import AdaptiveLimiter, Signal
from verbund.config import BatchConfig
from verbund.federation import Backend

__all__ = ["Capacity"]


class Capacity:
    def __init__(self, config: BatchConfig, limiter: AdaptiveLimiter | None = None) -> None:
        self._cfg = config
        self.limiter = limiter or AdaptiveLimiter()
        self.loop_lag = 0.0  # how late the event loop runs (seconds, a fading peak)
        # started here but not sent yet, so not in the backend's ``outstanding``
        self._starting: dict[str, int] = {}

    def room(self, backend: Backend) -> int:
        """How many more batch items ``backend`` may take now."""
        cap = backend.config.max_concurrency
        by_limiter = self.limiter.available(backend.name, cap or None)
        if not cap:
            return by_limiter
        busy = backend.outstanding + self._starting.get(backend.name, 0)
        by_utilisation = math.floor(cap * self._cfg.utilisation_threshold + 1e-9) - busy
        return max(0, min(by_limiter, by_utilisation))

    def loop_busy(self) -> bool:
        limit = self._cfg.max_loop_lag_ms / 1000
        return limit > 0 and self.loop_lag > limit

    def start(self, backend: str) -> None:
        """An item is on its way to ``backend``: it counts until it ends."""
        self.limiter.acquire(backend)
        self._starting[backend] = self._starting.get(backend, 0) + 1

    def sent(self, backend: str) -> None:
        """The item's request went out: the backend's own count has it now."""
        self._starting[backend] -= 1

    def end(self, backend: str, *, sent: bool, result: Execution | None) -> None:
        """The item is over; the limiter learns from how it went (nothing if it broke)."""
        if not sent:
            self._starting[backend] -= 1
        if result is None:
            self.limiter.release(backend, Signal.neutral)
        else:
            self.limiter.release(backend, result.signal, result.latency, result.work)

    async def watch_loop(self, stopping: asyncio.Event) -> None:
        """Measure how late this process's event loop runs, until ``stopping`` is set."""
        tick = 0.02
        while not stopping.is_set():
            t = time.monotonic()
            await asyncio.sleep(tick)
            late = max(0.0, time.monotonic() - t - tick)
            self.loop_lag = max(late, self.loop_lag * 0.8)  # peak, fading in ~0.2 s
