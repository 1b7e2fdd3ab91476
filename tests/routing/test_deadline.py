from __future__ import annotations

from pathlib import Path

from tests.conftest import make_config
from verbund.config import RoutingConfig
from verbund.federation import Federation
from verbund.routing import RouteContext, try_deadline


def test_deadline_follows_observed_latency(tmp_path: Path) -> None:
    cfg = RoutingConfig(first_byte_timeout=60, min_first_byte_timeout=1.0)
    b = Federation(make_config(tmp_path)).backends["west-1"]
    ctx = RouteContext(now=10.0, max_tokens=20)
    assert try_deadline(b, ctx, cfg, 10.0, stream=True) == 60  # nothing observed yet
    for _ in range(5):
        b.latency.observe_ttft(0.1)
        b.latency.observe_tpot(0.02)
    fast = try_deadline(b, ctx, cfg, 10.0, stream=True)
    assert 1.0 <= fast < 2.0
    b.outstanding = 3  # queueing ahead of us stretches the deadline
    assert try_deadline(b, ctx, cfg, 10.0, stream=True) > fast
    full = try_deadline(b, ctx, cfg, 10.0, stream=False)
    assert full > fast and full <= cfg.read_timeout
