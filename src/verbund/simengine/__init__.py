"""A synthetic OpenAI-compatible LLM engine for routing tests and benchmarks.

It models what matters to a router: a fixed number of sequence slots, a FIFO waiting
queue, prefill time proportional to the prompt tokens not in its prefix cache, per-token
decode time, Prometheus load metrics under vLLM's or SGLang's names, and faults on demand.
Run it with ``python -m verbund.simengine --port 8001 --slots 4 ...``.
"""

from verbund.simengine._app import BrokenStream, create_app, render_metrics
from verbund.simengine._cache import PrefixCache, Prompt
from verbund.simengine._engine import FILLER, Engine, EngineSpec, Fault, filler_token

__all__ = [
    "FILLER",
    "BrokenStream",
    "Engine",
    "EngineSpec",
    "Fault",
    "PrefixCache",
    "Prompt",
    "create_app",
    "filler_token",
    "render_metrics",
]
