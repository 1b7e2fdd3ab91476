"""The retry budget: failover must not multiply load when many backends fail at once.

Every request earns ``ratio`` retry tokens; every retry (a second or later try of a
request) spends one. A trickle of ``min_per_second`` tokens lets a quiet access point
still fail over. When the budget is empty, a failed try is the request's last: extra
upstream tries stay at about ``ratio`` of requests (20 % by default) plus the trickle.
"""

from __future__ import annotations

import time


class RetryBudget:
    def __init__(self, ratio: float, min_per_second: float, cap: float = 100.0) -> None:
        self._ratio = ratio
        self._trickle = min_per_second
        self._cap = max(cap, 10 * min_per_second)
        self._tokens = self._cap / 10
        self._last: float | None = None
        self.spent = 0
        self.refused = 0

    def _refill(self, now: float) -> None:
        if self._last is not None and now > self._last:
            self._tokens = min(self._cap, self._tokens + (now - self._last) * self._trickle)
        self._last = now if self._last is None else max(now, self._last)

    def on_request(self, now: float | None = None) -> None:
        self._refill(time.monotonic() if now is None else now)
        self._tokens = min(self._cap, self._tokens + self._ratio)

    def try_spend(self, now: float | None = None) -> bool:
        self._refill(time.monotonic() if now is None else now)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            self.spent += 1
            return True
        self.refused += 1
        return False

    @property
    def tokens(self) -> float:
        return self._tokens
