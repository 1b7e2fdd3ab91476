"""Engine load from the backends' Prometheus ``/metrics``: vLLM (new and old names), SGLang.

A reading older than ``stale_after`` seconds is ignored by the router, so a backend whose
metrics endpoint stops answering falls back to the access point's own counts.
"""

from __future__ import annotations

import asyncio
import logging
import time

from prometheus_client.parser import text_string_to_metric_families

from verbund.federation._backend import Backend, EngineLoad
from verbund.federation._federation import Federation
from verbund.federation._upstream import UpstreamFailed, UpstreamPool

log = logging.getLogger("verbund.metrics")

RUNNING = ("vllm:num_requests_running", "sglang:num_running_reqs")
WAITING = ("vllm:num_requests_waiting", "sglang:num_queue_reqs")
CACHE = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc", "sglang:token_usage")


def parse_engine_metrics(text: str, now: float) -> EngineLoad | None:
    """Sum running/waiting over label sets, take the highest cache usage; None if unknown."""
    running = waiting = cache = 0.0
    seen = False
    try:
        families = list(text_string_to_metric_families(text))
    except ValueError:
        return None
    for fam in families:
        for sample in fam.samples:
            name = sample.name
            if name in RUNNING:
                running += sample.value
                seen = True
            elif name in WAITING:
                waiting += sample.value
                seen = True
            elif name in CACHE:
                # vLLM reports 0..1; some exporters use percent
                value = sample.value / 100 if sample.value > 1 else sample.value
                cache = max(cache, value)
                seen = True
    if not seen:
        return None
    return EngineLoad(running=running, waiting=waiting, cache_usage=cache, scraped_at=now)


class MetricsScraper:
    """Background task: reads each backend's ``metrics_url`` every ``interval`` seconds."""

    def __init__(self, federation: Federation, pool: UpstreamPool, interval: float) -> None:
        self._backends = [b for b in federation.backends.values() if b.config.metrics_url]
        self._pool = pool
        self._interval = interval

    async def scrape(self, backend: Backend) -> None:
        url = backend.config.metrics_url
        assert url is not None
        try:
            status, body = await self._pool.side.get(backend, url, within=self._interval)
        except UpstreamFailed:
            return
        if status != 200:
            return
        load = parse_engine_metrics(body.decode("utf-8", "replace"), time.monotonic())
        if load is not None:
            backend.engine = load

    async def scrape_all(self) -> None:
        await asyncio.gather(*(self.scrape(b) for b in self._backends))

    async def run(self) -> None:
        if not self._backends:
            return
        while True:
            await self.scrape_all()
            await asyncio.sleep(self._interval)
