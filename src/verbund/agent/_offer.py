"""What the site offers as it runs: its backends and models, their clients and health.

The agent watches its own backends with the federation's own parts — a one-site
:class:`~verbund.federation.Federation`, its :class:`~verbund.federation.UpstreamPool`,
:class:`~verbund.federation.HealthTracker` and :class:`~verbund.federation.Prober` — so a
backend is probed the same way whether an access point or an agent does it. The same
pool carries the relay's requests (``ingress = "agent"``) and the scrapes of the engines'
metrics (:class:`~verbund.federation.MetricsScraper`), whose readings the agent reports
to access points on ``GET /load``.

A new site config (a reload) makes a new :class:`Offer`; backends whose config did not
change keep their health, so a reload does not make the whole site "unknown" for a probe
interval. The old offer's clients are closed when the agent stops, not at once: streams
relayed through them finish.

On-demand instances come and go without a new offer: :meth:`Offer.instance` gives the
relay a client for one (made on its first relayed request), :meth:`Offer.keep_instances`
retires those of instances that stopped. They are not probed here: the on-demand manager
judges their health itself before it announces them.
"""

from __future__ import annotations

import asyncio
import contextlib

from verbund.agent._config import SiteAgentConfig
from verbund.config import BackendConfig, FederationConfig, ModelConfig, SiteConfig
from verbund.federation import (
    Backend,
    Federation,
    HealthTracker,
    MetricsScraper,
    Prober,
    TransportFactory,
    UpstreamPool,
)

__all__ = ["Offer"]

_CARRIED = (
    "healthy",
    "last_probe_ok",
    "probe_failures",
    "down_since",
    "out_since",
    "returned_at",
    "refused",
    "engine",
)


class Offer:
    def __init__(
        self, config: SiteAgentConfig, transport_factory: TransportFactory | None = None
    ) -> None:
        self.config = config
        site = SiteConfig(
            name=config.site.name,
            region=config.site.region,
            jurisdiction=config.site.jurisdiction,
            max_data_class=config.site.max_data_class,
            certifications=config.site.certifications,
            backends=config.backends,
        )
        # owner_site and base_model may name what is elsewhere: the federation checks those
        models = [
            ModelConfig(**m.model_dump(exclude={"data_classes", "owner_site", "base_model"}))
            for m in config.models
        ]
        self.federation = Federation(
            FederationConfig(sites=[site], models=models, routing=config.routing)
        )
        self.pool = UpstreamPool(self.federation, config.routing, transport_factory)
        self.tracker = HealthTracker(config.routing, self.federation)
        self.prober = Prober(self.federation, self.pool, self.tracker, config.routing)
        # the engines' load (their metrics_url), reported to access points on GET /load
        self.scraper = MetricsScraper(self.federation, self.pool, config.routing.metrics_interval)
        self._tasks: list[asyncio.Task[None]] = []
        self._instances: dict[str, Backend] = {}  # on-demand instances relayed to

    def instance(self, name: str, url: str, model: str) -> Backend:
        """The on-demand instance ``name`` (engine at ``url``) as a backend of this
        site, with clients in the pool (made once, kept while it runs)."""
        b = self._instances.get(name)
        if b is None or b.url != url:
            site = self.federation.sites[self.config.site.name]
            b = Backend(BackendConfig(name=name, url=url, models=[model]), site)
            self._instances[name] = b
            self.pool.add(b)
        return b

    def keep_instances(self, names: set[str]) -> None:
        """Retire the clients of instances no longer in ``names`` (they stopped)."""
        for name in [n for n in self._instances if n not in names]:
            self.pool.remove(self._instances.pop(name))

    @property
    def backends(self) -> dict[str, Backend]:
        return self.federation.backends

    def health(self, backend: Backend) -> bool | None:
        """The agent's verdict: up, down, or None while no probe has answered yet."""
        if backend.healthy and backend.last_probe_ok == 0 and backend.probe_failures == 0:
            return None
        return backend.healthy

    def carry_health(self, previous: Offer) -> None:
        """Backends that kept their config keep what is known of their health."""
        for name, b in self.backends.items():
            old = previous.backends.get(name)
            if old is not None and old.config == b.config:
                for attr in _CARRIED:
                    setattr(b, attr, getattr(old, attr))

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self.prober.run(), name="prober"),
            loop.create_task(self.scraper.run(), name="metrics-scraper"),
        ]

    async def stop_probing(self) -> None:
        tasks, self._tasks = self._tasks, []
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t

    async def aclose(self) -> None:
        await self.stop_probing()
        await self.pool.aclose()
