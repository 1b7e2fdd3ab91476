"""Metering what the site's engines served from their own token counters, for requests
the agent does not relay (``ingress = "direct"``: access points reach the backends
themselves) — docs/trust.md, "Countersigned usage".

vLLM and SGLang (and the simulated engine, under vLLM's names) count prompt and
generated tokens per model on their Prometheus ``/metrics`` (``vllm:prompt_tokens_total``
and ``vllm:generation_tokens_total`` with a ``model_name`` label; llama.cpp's C++ server
``llamacpp:prompt_tokens_total`` and ``llamacpp:tokens_predicted_total`` without one).
The agent reads every backend's ``metrics_url`` every ``READ_SECONDS`` and before it signs
a statement, and records the growth since its last reading under institution
:data:`~verbund.trust.ENGINE` (an engine cannot tell institutions apart): the month's sum
goes into the statement as one line per model. A counter that went down was reset (the
engine restarted): its whole value is new. The first reading of a backend after the agent
starts only sets the baseline, so what an engine served while its agent was not running
is not counted: the statement can under-state, never over-state.

A model one of whose backends exposes no token counters (no ``metrics_url``, or none of
the names above, such as ``llama_cpp.server``), or whose counters do not name it (an
engine serving several models under one label), is stated ``unmetered``: the site says so
rather than sign a partial count.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence

from verbund.agent._meter import Meter
from verbund.agent._offer import Offer
from verbund.federation import Backend, UpstreamFailed, engine_samples

__all__ = ["EngineCounters", "parse_token_counters", "token_growth"]

READ_SECONDS = 10.0
PROMPT = ("vllm:prompt_tokens_total", "sglang:prompt_tokens_total", "llamacpp:prompt_tokens_total")
COMPLETION = (
    "vllm:generation_tokens_total",
    "sglang:generation_tokens_total",
    "llamacpp:tokens_predicted_total",
)
Tokens = tuple[float, float]  # prompt, completion


def parse_token_counters(text: str, models: Sequence[str]) -> dict[str, Tokens] | None:
    """Prompt and completion token counters per model (``models``: the backend's); a
    sample without a ``model_name`` label belongs to the backend's only model. None:
    the text holds no token counter (or is not Prometheus text)."""
    out: dict[str, list[float]] = {}
    seen = False
    samples = engine_samples(text)
    if samples is None:
        return None
    for sample in samples:
        which = 0 if sample.name in PROMPT else 1 if sample.name in COMPLETION else -1
        if which < 0:
            continue
        seen = True
        model = sample.labels.get("model_name")
        if model is None and len(models) == 1:
            model = models[0]
        if model is None or model not in models:
            continue  # a model the backend does not offer here: not attributable
        out.setdefault(model, [0.0, 0.0])[which] += sample.value
    if not seen:
        return None
    return {m: (v[0], v[1]) for m, v in out.items()}


def token_growth(
    before: Mapping[str, Tokens] | None, now: Mapping[str, Tokens]
) -> dict[str, tuple[int, int]]:
    """What each model's counters grew by since ``before`` (None: the first reading,
    a baseline: nothing). A counter below its last value was reset: all of it is new."""
    if before is None:
        return {}
    out: dict[str, tuple[int, int]] = {}
    for model, (p, c) in now.items():
        p0, c0 = before.get(model, (0.0, 0.0))
        grown = (int(p - p0 if p >= p0 else p), int(c - c0 if c >= c0 else c))
        if grown != (0, 0):
            out[model] = grown
    return out


class EngineCounters:
    def __init__(self, meter: Meter) -> None:
        self._meter = meter
        self._last: dict[str, dict[str, Tokens]] = {}  # backend -> its last reading
        self._unreadable: set[str] = set()  # backends without token counters
        self._lock = asyncio.Lock()

    def models(self, offer: Offer) -> tuple[list[str], list[str]]:
        """(metered, unmetered): models all of whose backends' token counters are read,
        and models with a backend that exposes none (or that was never read)."""
        served: set[str] = set()
        unmetered: set[str] = set()
        for b in offer.backends.values():
            served.update(b.config.models)
            counted = self._last.get(b.config.name)
            if counted is None or b.config.name in self._unreadable:
                unmetered.update(b.config.models)
            else:  # a model its counters do not name cannot be attributed
                unmetered.update(m for m in b.config.models if m not in counted)
        return sorted(served - unmetered), sorted(unmetered)

    async def _read(self, offer: Offer, b: Backend) -> None:
        url = b.config.metrics_url
        assert url is not None
        try:
            status, body = await offer.pool.side.get(b, url, within=READ_SECONDS)
        except UpstreamFailed:
            return  # away: its counters are read next time (they keep counting)
        now = parse_token_counters(body.decode("utf-8", "replace"), b.config.models)
        if status != 200 or now is None:
            self._unreadable.add(b.config.name)
            return
        self._unreadable.discard(b.config.name)
        for model, (prompt, completion) in token_growth(self._last.get(b.config.name), now).items():
            self._meter.record_engine(model, b.config.name, prompt, completion)
        self._last[b.config.name] = dict(now)

    async def read(self, offer: Offer) -> None:
        """Read every backend's counters once (the statement reads first)."""
        async with self._lock:
            with_metrics = [b for b in offer.backends.values() if b.config.metrics_url]
            await asyncio.gather(*(self._read(offer, b) for b in with_metrics))

    async def run(self, offer: Callable[[], Offer]) -> None:
        while True:
            await self.read(offer())
            await asyncio.sleep(READ_SECONDS)
