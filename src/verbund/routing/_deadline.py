"""Per-try deadlines derived from what a backend usually takes.

A fixed minute-long timeout lets a stalled backend (accepting connections, answering
nothing) hold requests for a minute. Instead each try gets a deadline from the
backend's observed time to first token, its queue and, for answers that are not
streamed, the expected generation time::

    stream:      2 * wait + 4 * ttft_dev + 0.5 s
    not stream:  2 * (wait + tpot * n) + 4 * ttft_dev + 1 s

clamped to ``[min_first_byte_timeout, first_byte_timeout]`` (streams) or
``[min_first_byte_timeout, read_timeout]``. ``wait`` is the router's expected wait
(:func:`verbund.routing.estimate`). Until a backend has three observations the configured
timeouts apply unchanged.
"""

from __future__ import annotations

from verbund.config import RoutingConfig
from verbund.federation import Backend
from verbund.routing._policy import RouteContext
from verbund.routing._score import DEFAULT_TPOT, estimate

MIN_SAMPLES = 3


def try_deadline(
    backend: Backend, ctx: RouteContext, cfg: RoutingConfig, now: float, *, stream: bool
) -> float:
    ceiling = cfg.first_byte_timeout if stream else cfg.read_timeout
    if backend.latency.samples < MIN_SAMPLES:
        return ceiling
    wait = estimate([backend], ctx, cfg, now)[0].wait
    dev = backend.latency.ttft_dev
    if stream:
        derived = 2 * wait + 4 * dev + 0.5
    else:
        tpot = backend.latency.tpot if backend.latency.tpot is not None else DEFAULT_TPOT
        derived = 2 * (wait + tpot * (ctx.max_tokens or cfg.default_max_tokens)) + 4 * dev + 1.0
    return max(cfg.min_first_byte_timeout, min(derived, ceiling))
