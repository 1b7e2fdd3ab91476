"""The simulated engine: slots, a FIFO waiting queue, prefill, decode and a prefix cache.

A request waits for one of ``slots`` sequence slots (first come, first served), then
pays prefill for the prompt tokens the prefix cache does not hold, then produces one
token per ``decode_ms_per_token``. Times are scaled by the fault's ``factor`` while the
engine is ``slow``. Nothing here knows HTTP; the app in :mod:`._app` drives it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from verbund.simengine._cache import PrefixCache, Prompt, message_text

__all__ = ["FILLER", "Engine", "EngineSpec", "Fault", "Generation", "filler_token"]

MetricsStyle = Literal["vllm", "vllm-old", "sglang"]
FaultMode = Literal["none", "error503", "slow", "break_stream_after", "hang"]
FILLER = (
    "Verbund", "routes", "every", "request", "to", "a", "site", "that", "may", "serve",
    "it", "and", "answers", "with", "tokens", "of", "filler", "text", "for", "tests.",
)  # fmt: skip


def filler_token(i: int) -> str:
    """The i-th token of every answer: answers are deterministic, so resumes can be checked."""
    return FILLER[i % len(FILLER)] + " "


@dataclass(frozen=True, slots=True)
class EngineSpec:
    name: str = "sim"
    models: tuple[str, ...] = ("sim",)
    slots: int = 4
    prefill_ms_per_token: float = 0.5
    decode_ms_per_token: float = 20.0
    prefix_cache_tokens: int = 32768
    kv_cache_tokens: int = 0  # 0: 4096 a slot
    metrics_style: MetricsStyle = "vllm"
    default_max_tokens: int = 16

    @property
    def kv_capacity(self) -> int:
        return self.kv_cache_tokens or 4096 * self.slots


@dataclass(slots=True)
class Fault:
    """What the engine does wrong on purpose (set through ``POST /_sim/fault``)."""

    mode: FaultMode = "none"
    n: int = 0  # break_stream_after: content tokens sent before the connection breaks
    factor: float = 10.0  # slow: every prefill and decode takes this many times longer


@dataclass(slots=True)
class Stats:
    received: int = 0
    completed: int = 0
    rejected: int = 0  # answered with an error by a fault
    broken: int = 0  # streams broken on purpose
    cancelled: int = 0  # the client went away
    prompt_tokens: int = 0
    cached_tokens: int = 0
    prefix_hits: int = 0
    generation_tokens: int = 0
    # (wall time, X-Request-Id, stream) of the most recent requests, oldest first
    received_log: collections.deque[tuple[float, str, bool]] = field(
        default_factory=lambda: collections.deque(maxlen=50_000)
    )


@dataclass(eq=False, slots=True)
class Generation:
    """One sequence: what it was asked and what it has done so far."""

    prompt: Prompt
    max_tokens: int
    first_token: int = 0  # > 0 when continuing a partial assistant message
    cached_tokens: int = 0
    generated: int = 0

    @property
    def context_tokens(self) -> int:
        return self.prompt.tokens + self.generated


class Engine:
    """Owns the slots, the queue, the cache and the counters of one simulated server."""

    def __init__(
        self,
        spec: EngineSpec,
        sleep: Callable[[float], Any] = asyncio.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.spec = spec
        self.fault = Fault()
        self.cache = PrefixCache(spec.prefix_cache_tokens)
        self.stats = Stats()
        self.running: set[Generation] = set()
        self._busy_slots = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._sleep = sleep
        self._clock = clock

    @property
    def waiting(self) -> int:
        return sum(1 for f in self._waiters if not f.done())

    @property
    def kv_usage(self) -> float:
        used = sum(g.context_tokens for g in self.running)
        return min(1.0, used / self.spec.kv_capacity)

    def record_received(self, request_id: str, stream: bool) -> None:
        self.stats.received += 1
        self.stats.received_log.append((self._clock(), request_id, stream))

    def new_generation(
        self, messages: Sequence[Any], max_tokens: int, continue_final: bool
    ) -> Generation:
        first = 0
        if continue_final:
            first = len(message_text(messages[-1]).split())
        return Generation(Prompt.of(messages), max_tokens, first_token=first)

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        if self._busy_slots < self.spec.slots and not self._waiters:
            self._busy_slots += 1
        else:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            try:
                await fut
            except asyncio.CancelledError:
                if not fut.cancelled() and fut.done():
                    self._release()  # the slot was handed over as we were cancelled
                else:
                    with contextlib.suppress(ValueError):
                        self._waiters.remove(fut)
                raise
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)  # the slot passes straight to the next in line
                return
        self._busy_slots -= 1

    def _factor(self) -> float:
        return self.fault.factor if self.fault.mode == "slow" else 1.0

    async def run(self, gen: Generation) -> AsyncGenerator[str, None]:
        """Queue, prefill, then yield the answer token by token.

        The first item is ``""`` once prefill is done (an engine's first byte); then one
        token per decode step. Ends early (releasing the slot) when the caller stops.
        """
        done = False
        try:
            async with self._slot():
                cached = min(self.cache.lookup(gen.prompt), gen.prompt.tokens - 1)
                gen.cached_tokens = max(0, cached)
                if gen.cached_tokens:
                    self.stats.prefix_hits += 1
                self.stats.prompt_tokens += gen.prompt.tokens
                self.stats.cached_tokens += gen.cached_tokens
                self.running.add(gen)
                try:
                    uncached = gen.prompt.tokens - gen.cached_tokens
                    await self._pause(uncached * self.spec.prefill_ms_per_token)
                    self.cache.insert(gen.prompt)
                    yield ""
                    for i in range(gen.max_tokens):
                        await self._pause(self.spec.decode_ms_per_token)
                        gen.generated += 1
                        self.stats.generation_tokens += 1
                        yield filler_token(gen.first_token + i)
                    done = True
                finally:
                    self.running.discard(gen)
        finally:
            if done:
                self.stats.completed += 1
            else:
                self.stats.cancelled += 1

    async def _pause(self, ms: float) -> None:
        seconds = ms * self._factor() / 1000
        if seconds > 0:
            await self._sleep(seconds)

    def remember_answer(self, messages: Sequence[Any], answer: str, continued: bool) -> None:
        """Cache the conversation including the answer, as the next turn will send it."""
        if continued:
            last = dict(messages[-1])
            last["content"] = message_text(last) + answer
            convo = [*messages[:-1], last]
        else:
            convo = [*messages, {"role": "assistant", "content": answer}]
        self.cache.insert(Prompt.of(convo))
