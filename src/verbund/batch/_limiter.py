"""An adaptive concurrency limit per backend for batch work (AIMD).

Batch requests to a backend may have at most ``limit`` in flight. The limit grows by one
per completed window of requests (after a slow start that doubles it) while answers come
back about as fast as the best seen, and shrinks by a factor when a backend signals
overload (429, 5xx, timeouts) or when the recent time per generated token (a moving
average, so one slow answer is no signal) grows beyond a tolerance over its baseline (the
best moving average seen, slowly forgotten), which means requests queue inside the
engine. A shrink happens at most once per cool-down, so one overload episode is not
punished many times.

Pure bookkeeping with an injectable clock: tests drive it without a network.
"""

from __future__ import annotations

import enum
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["AdaptiveLimiter", "Signal"]

log = logging.getLogger("verbund.batch")


class Signal(enum.Enum):
    ok = "ok"  # a normal answer; with a latency sample
    overload = "overload"  # the backend is overloaded or failing
    neutral = "neutral"  # nothing learned (e.g. the request itself was bad)


@dataclass(slots=True)
class _Window:
    limit: float
    maximum: int
    in_flight: int = 0
    recent: float | None = None
    baseline: float | None = None
    slow_start: bool = True
    last_decrease: float = -math.inf


class AdaptiveLimiter:
    def __init__(
        self,
        *,
        initial: float = 2.0,
        recent_weight: float = 0.2,
        minimum: float = 1.0,
        maximum: int = 256,
        backoff: float = 0.7,
        latency_tolerance: float = 2.0,
        baseline_drift: float = 0.01,
        cooldown: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._initial = initial
        self._weight = recent_weight
        self._minimum = minimum
        self._maximum = maximum
        self._backoff = backoff
        self._tolerance = latency_tolerance
        self._drift = baseline_drift
        self._cooldown = cooldown
        self._clock = clock
        self._windows: dict[str, _Window] = {}

    def _window(self, key: str, maximum: int | None = None) -> _Window:
        w = self._windows.get(key)
        cap = self._maximum if not maximum else min(maximum, self._maximum)
        if w is None:
            # a known capacity lets the slow start begin at a quarter of it
            first = max(self._initial, (maximum or 0) / 4)
            w = self._windows[key] = _Window(limit=min(first, cap), maximum=cap)
        elif maximum is not None:
            w.maximum = cap
            w.limit = min(w.limit, cap)
        return w

    def limit(self, key: str) -> float:
        return self._window(key).limit

    def in_flight(self, key: str) -> int:
        return self._window(key).in_flight

    def available(self, key: str, maximum: int | None = None) -> int:
        """How many more requests may start now (``maximum``: the backend's capacity)."""
        w = self._window(key, maximum)
        return max(0, math.floor(w.limit) - w.in_flight)

    def acquire(self, key: str) -> None:
        self._window(key).in_flight += 1

    def release(
        self, key: str, signal: Signal, latency: float | None = None, work: int = 1
    ) -> None:
        """A request ended; ``latency / work`` is compared with the baseline (per token)."""
        w = self._window(key)
        w.in_flight = max(0, w.in_flight - 1)
        if signal is Signal.overload:
            self._decrease(key, w, "overload")
            return
        if signal is Signal.neutral or latency is None:
            return
        sample = latency / max(work, 1)
        w.recent = sample if w.recent is None else w.recent + self._weight * (sample - w.recent)
        if w.baseline is None or w.recent < w.baseline:
            w.baseline = w.recent
        else:
            w.baseline *= 1 + self._drift  # slowly forget a baseline that is no longer reachable
        if w.recent > w.baseline * self._tolerance:
            self._decrease(key, w, "latency")
            return
        # grow only while the window is used (half or more): an idle limit says nothing
        if (w.in_flight + 1) * 2 >= w.limit:
            step = 1.0 if w.slow_start else 1.0 / w.limit
            w.limit = min(float(w.maximum), w.limit + step)

    def _decrease(self, key: str, w: _Window, why: str) -> None:
        now = self._clock()
        w.slow_start = False
        if now - w.last_decrease < self._cooldown:
            return
        w.last_decrease = now
        before, w.limit = w.limit, max(self._minimum, w.limit * self._backoff)
        log.info("batch limit of %s: %.1f -> %.1f (%s)", key, before, w.limit, why)
