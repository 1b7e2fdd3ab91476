"""Engine load from the backends' Prometheus ``/metrics``: vLLM (new and old names), SGLang.

A reading older than ``stale_after`` seconds is ignored by the router, so a backend whose
metrics endpoint stops answering falls back to the access point's own counts.

Backends a site's agent announces are read by that agent (it scrapes its own backends'
``metrics_url``, reachable from the site even when the access points reach the backends
only through its relay) and reported on ``GET /load`` (:func:`load_report`). The access
point asks each agent once per interval — one request per site, not per backend — and
puts the readings where its own scrapes go (:func:`apply_load_report`), so the router
weighs announced backends by the same engine load as configured ones.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from verbund.errors import ApiError
from verbund.federation._agent import AgentClient
from verbund.federation._backend import Backend, EngineLoad
from verbund.federation._federation import Federation
from verbund.federation._site import Site
from verbund.federation._upstream import UpstreamFailed, UpstreamPool

log = logging.getLogger("verbund.metrics")

RUNNING = ("vllm:num_requests_running", "sglang:num_running_reqs")
WAITING = ("vllm:num_requests_waiting", "sglang:num_queue_reqs")
CACHE = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc", "sglang:token_usage")


def engine_samples(text: str) -> list[Sample] | None:
    """The samples of an engine's Prometheus text; None if it is not Prometheus text.
    (The load here and the agent's token counters read the same exposition.)"""
    try:
        return [sample for fam in text_string_to_metric_families(text) for sample in fam.samples]
    except ValueError:
        return None


def parse_engine_metrics(text: str, now: float) -> EngineLoad | None:
    """Sum running/waiting over label sets, take the highest cache usage; None if unknown."""
    running = waiting = cache = 0.0
    seen = False
    samples = engine_samples(text)
    if samples is None:
        return None
    for sample in samples:
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


LOAD_PATH = "/load"  # an agent's report of its backends' engine load


def load_report(backends: Iterable[Backend], now: float) -> dict[str, Any]:
    """What an agent reports on ``GET /load``: each backend's last engine reading and its
    age in seconds (backends never read are left out)."""
    out: dict[str, Any] = {}
    for b in backends:
        if b.engine.scraped_at > 0:
            out[b.config.name] = {
                "running": b.engine.running,
                "waiting": b.engine.waiting,
                "cache_usage": b.engine.cache_usage,
                "age_seconds": round(max(0.0, now - b.engine.scraped_at), 3),
            }
    return {"backends": out}


def apply_load_report(site: Site, report: Mapping[str, Any], now: float) -> int:
    """Take an agent's report into its announced backends' engine load (as if scraped
    ``age_seconds`` before ``now``); how many backends it set. Entries that are not
    finite non-negative numbers are ignored."""
    entries = report.get("backends")
    if not isinstance(entries, Mapping):
        return 0
    applied = 0
    for b in site.backends:
        entry = entries.get(b.config.name) if b.announced else None
        if not isinstance(entry, Mapping):
            continue
        try:
            values = [
                float(entry.get(k, 0.0))
                for k in ("running", "waiting", "cache_usage", "age_seconds")
            ]
        except (TypeError, ValueError):
            continue
        if not all(math.isfinite(v) and v >= 0 for v in values):
            continue
        running, waiting, cache, age = values
        b.engine = EngineLoad(running, waiting, min(cache, 1.0), now - age)
        applied += 1
    return applied


class MetricsScraper:
    """Background task: every ``interval`` seconds, reads each configured backend's
    ``metrics_url`` and asks each site agent in ``agents`` for its backends' load."""

    def __init__(
        self,
        federation: Federation,
        pool: UpstreamPool,
        interval: float,
        agents: Mapping[str, AgentClient] | None = None,
    ) -> None:
        self._federation = federation
        self._backends = [
            b for b in federation.backends.values() if b.config.metrics_url and not b.announced
        ]
        self._pool = pool
        self._interval = interval
        self._agents = dict(agents or {})

    async def ask_agent(self, site: str, agent: AgentClient) -> None:
        """One agent's load report, into its announced backends."""
        try:
            report = await agent.get_json(LOAD_PATH, within=self._interval)
        except ApiError:  # away, or too old to know /load: its backends keep own counts
            return
        live = self._federation.sites.get(site)
        if live is not None and isinstance(report, Mapping):
            apply_load_report(live, report, time.monotonic())

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
        await asyncio.gather(
            *(self.scrape(b) for b in self._backends),
            *(self.ask_agent(site, agent) for site, agent in self._agents.items()),
        )

    async def run(self) -> None:
        if not self._backends and not self._agents:
            return
        while True:
            await self.scrape_all()
            await asyncio.sleep(self._interval)
