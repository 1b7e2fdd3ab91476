"""The adaptive (AIMD) concurrency limit for batch work, driven without a network."""

from __future__ import annotations

from verbund.batch import AdaptiveLimiter, Signal


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def fill(lim: AdaptiveLimiter, key: str = "b") -> int:
    n = lim.available(key)
    for _ in range(n):
        lim.acquire(key)
    return n


def test_slow_start_then_additive_increase() -> None:
    clock = Clock()
    lim = AdaptiveLimiter(initial=1, maximum=64, clock=clock)
    # slow start: a dispatcher keeps the window full; every answer at the baseline adds one
    for _ in range(10):
        fill(lim)
        lim.release("b", Signal.ok, latency=1.0)
    assert lim.limit("b") == 11
    fill(lim)
    lim.release("b", Signal.overload)  # leaves slow start
    after_cut = lim.limit("b")
    assert after_cut == 11 * 0.7
    clock.t += 10
    for _ in range(int(after_cut)):  # one window of answers adds about one
        fill(lim)
        lim.release("b", Signal.ok, latency=1.0)
    assert after_cut + 0.8 < lim.limit("b") <= after_cut + 1.2


def test_overload_cuts_multiplicatively_once_per_cooldown() -> None:
    clock = Clock()
    lim = AdaptiveLimiter(initial=10, backoff=0.5, cooldown=1.0, clock=clock)
    fill(lim)
    for _ in range(5):  # one overload episode: five failures at once
        lim.release("b", Signal.overload)
    assert lim.limit("b") == 5
    clock.t += 2
    lim.release("b", Signal.overload)
    assert lim.limit("b") == 2.5
    for _ in range(10):
        clock.t += 2
        lim.release("b", Signal.overload)
    assert lim.limit("b") == 1  # never below the minimum


def test_sustained_latency_growth_per_token_is_a_congestion_signal() -> None:
    clock = Clock()
    lim = AdaptiveLimiter(initial=8, maximum=8, latency_tolerance=2.0, clock=clock)
    for _ in range(5):  # 10 ms per token: the baseline
        fill(lim)
        lim.release("b", Signal.ok, latency=1.0, work=100)
    fill(lim)
    lim.release("b", Signal.ok, latency=4.0, work=100)  # one slow answer is no signal
    assert lim.limit("b") == 8
    for _ in range(10):  # 40 ms per token, again and again: requests queue in the engine
        fill(lim)
        lim.release("b", Signal.ok, latency=4.0, work=100)
    assert lim.limit("b") < 8
    # a longer answer that is just as fast per token is no signal
    lim2 = AdaptiveLimiter(initial=8, maximum=8, clock=clock)
    for work in (100, 500, 100, 500, 500, 500):
        fill(lim2)
        lim2.release("b", Signal.ok, latency=work / 100, work=work)
    assert lim2.limit("b") == 8


def test_idle_windows_do_not_grow_and_capacity_caps() -> None:
    lim = AdaptiveLimiter(initial=4, maximum=100)
    assert lim.available("big", maximum=64) == 16  # slow start from a quarter of capacity
    for _ in range(50):  # one at a time: the window is never half used
        lim.acquire("b")
        lim.release("b", Signal.ok, latency=1.0)
    assert lim.limit("b") == 4
    assert lim.available("b", maximum=3) == 3  # the backend's capacity bounds the window
    assert lim.available("other") == 4
    lim.acquire("b")
    lim.release("b", Signal.neutral)  # a bad request says nothing about the backend
    assert lim.in_flight("b") == 0 and lim.limit("b") == 3
