"""Prometheus metrics of one access point, in a registry of its own (no globals).

Labels stay low-cardinality: site, model (only configured names), status, backend. No
key, user or institution labels: those belong in usage reports, not in time series.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from verbund.accounting import UsageRecord
from verbund.config import SiteState
from verbund.federation import Federation

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16)


class _FederationState(Collector):
    """Read at scrape time from the live federation: nothing to update on the hot path."""

    def __init__(self, federation: Federation) -> None:
        self._fed = federation

    def collect(self) -> Iterator[Metric]:
        now = time.monotonic()
        up = GaugeMetricFamily(
            "verbund_backend_up", "Backend can take new requests (1/0).", labels=["site", "backend"]
        )
        ejections = GaugeMetricFamily(
            "verbund_ejections_total",
            "Times a backend was ejected since start.",
            labels=["backend"],
        )
        in_flight = GaugeMetricFamily(
            "verbund_in_flight", "Requests in flight per site.", labels=["site"]
        )
        state = GaugeMetricFamily(
            "verbund_site_state",
            "Lifecycle state of a site (1 = current).",
            labels=["site", "state"],
        )
        for site in self._fed:
            for b in site.backends:
                up.add_metric([site.name, b.name], 1.0 if b.available(now) else 0.0)
                ejections.add_metric([b.name], float(b.ejected_total))
            in_flight.add_metric([site.name], float(sum(b.outstanding for b in site.backends)))
            for s in SiteState:
                state.add_metric([site.name, s.value], 1.0 if site.state is s else 0.0)
        yield from (up, ejections, in_flight, state)


class ClockSkewCollector(Collector):
    """How far this host's clock is ahead of the store's and Redis's, read at scrape time."""

    def __init__(self, skew: Callable[[], dict[str, float | None]]) -> None:
        self._skew = skew

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily(
            "verbund_clock_skew_seconds",
            "This host's clock minus the shared clock (store, redis); leases, quota windows "
            "and budget months use the shared one.",
            labels=["reference"],
        )
        for reference, seconds in self._skew().items():
            if seconds is not None:
                gauge.add_metric([reference], seconds)
        yield gauge


class Metrics:
    def __init__(self, federation: Federation) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._models = set(federation.models)
        self.requests = Counter(
            "verbund_requests",
            "Requests by site, model and outcome.",
            ["site", "model", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "verbund_request_duration_seconds",
            "Time from request to the end of the answer.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.ttft = Histogram(
            "verbund_ttft_seconds",
            "Time to the first streamed byte.",
            ["site", "model"],
            buckets=TTFT_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter(
            "verbund_tokens",
            "Tokens by site, model and kind.",
            ["site", "model", "kind"],
            registry=self.registry,
        )
        self.retries = Counter(
            "verbund_retries", "Extra upstream tries (failover).", registry=self.registry
        )
        self.registry.register(_FederationState(federation))
        self._children: dict[tuple[Any, ...], Any] = {}

    def observe(self, rec: UsageRecord) -> None:
        model = rec.model if rec.model in self._models else "unknown"
        site = rec.site or "none"
        self._child(self.requests, site, model, rec.status).inc()
        if rec.status in ("ok", "incomplete"):
            self._child(self.duration, model).observe(rec.latency_ms / 1000)
            if rec.stream and rec.ttft_ms is not None:
                self._child(self.ttft, site, model).observe(rec.ttft_ms / 1000)
        if rec.prompt_tokens:
            self._child(self.tokens, site, model, "prompt").inc(rec.prompt_tokens)
        if rec.completion_tokens:
            self._child(self.tokens, site, model, "completion").inc(rec.completion_tokens)
        if rec.attempts > 1:
            self.retries.inc(rec.attempts - 1)

    def _child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, remembered: ``labels()`` costs a lock and a few
        microseconds per call, on every request. Label values are few (configured sites
        and models, statuses)."""
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def render(self) -> bytes:
        return generate_latest(self.registry)
