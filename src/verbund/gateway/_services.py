"""Everything an access point is made of, built once in the app factory.

Nothing here is a module-level global: each app owns its own :class:`Services`, so
tests can build as many access points as they like in one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from verbund.accounting import (
    BudgetService,
    PriceBook,
    Retention,
    SiteAvailability,
    UsageRecord,
    UsageRecorder,
)
from verbund.audit import AuditLog
from verbund.batch import BatchRunner, BatchService
from verbund.config import FederationConfig, SiteState, config_digest
from verbund.coordination import (
    EventBus,
    Limiter,
    LocalBus,
    LocalLimiter,
    LocalPresence,
    Presence,
    QuotaGate,
    RedisBus,
    RedisLimiter,
    RedisPresence,
)
from verbund.errors import NotFound
from verbund.federation import (
    Federation,
    HealthTracker,
    MetricsScraper,
    Prober,
    TransportFactory,
    UpstreamPool,
)
from verbund.files import FileService, LocalBlobStore
from verbund.gateway._dispatch import ProxyDispatch
from verbund.gateway._overload import Overload, OverloadCollector
from verbund.gateway._proxy import Proxy
from verbund.jobs import ChainedSource, DirectoryFileSource, FileServiceSource, JobService
from verbund.routing import Router, make_policy
from verbund.store import SiteStateRow, Store
from verbund.telemetry import Metrics, Pseudonymizer, log_access, make_tracer
from verbund.telemetry._tracing import Tracer
from verbund.tenancy import InstitutionRegistry, KeyService

log = logging.getLogger("verbund.gateway")

RESYNC_SECONDS = 30.0


@dataclass
class Services:
    config: FederationConfig
    admin_key: str | None
    store: Store
    audit: AuditLog
    federation: Federation
    pool: UpstreamPool
    tracker: HealthTracker
    prober: Prober
    scraper: MetricsScraper
    router: Router
    proxy: Proxy
    keys: KeyService
    institutions: InstitutionRegistry
    usage: UsageRecorder
    jobs: JobService  # training jobs (issue 9)
    bus: EventBus
    presence: Presence
    quotas: QuotaGate
    metrics: Metrics
    tracer: Tracer
    tracer_provider: object | None
    pseudonyms: Pseudonymizer
    on_usage: Callable[[UsageRecord], None]
    budgets: BudgetService
    availability: SiteAvailability
    retention: Retention
    # OIP v2 inference: the same pool, health and failover, but the OIP routes record
    # usage themselves, once they know the answer's size
    oip_proxy: Proxy
    files: FileService
    batches: BatchService
    overload: Overload
    redis: Redis | None = None
    batch_runner: BatchRunner = field(init=False)
    started: float = field(default_factory=time.time)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    def build(
        cls,
        config: FederationConfig,
        admin_key: str | None,
        transport_factory: TransportFactory | None = None,
        tracer: Tracer | None = None,
    ) -> Services:
        store = Store(config.store.url)
        audit = AuditLog(store)
        federation = Federation(config)
        pool = UpstreamPool(federation, config.routing, transport_factory)
        tracker = HealthTracker(config.routing, federation)
        usage = UsageRecorder(
            store, Path(config.gateway.state_dir) / "usage-spool" / config.gateway.name
        )
        redis: Redis | None = None
        bus: EventBus
        presence: Presence
        limiter: Limiter
        if config.coordination.redis_url:
            redis = Redis.from_url(
                config.coordination.redis_url, socket_timeout=1.0, socket_connect_timeout=1.0
            )
            bus = RedisBus(redis, config.gateway.name)
            redis_presence = RedisPresence(redis, config.gateway.name)
            presence = redis_presence
            limiter = RedisLimiter(redis, lambda: redis_presence.last_count)
        else:
            bus, presence, limiter = LocalBus(), LocalPresence(config.gateway.name), LocalLimiter()
        quotas = QuotaGate(limiter)
        metrics = Metrics(federation)
        overload = Overload(config.gateway.max_in_flight, config.gateway.shed_after_lag)
        metrics.registry.register(OverloadCollector(overload))
        tracer_provider: object | None = None
        if tracer is None:
            tracer, tracer_provider = make_tracer(
                config.telemetry.otlp_endpoint, config.gateway.name
            )
        institutions = InstitutionRegistry(store, audit, bus)
        budgets = BudgetService(
            store, PriceBook(config.sites), flush=usage.flush, budgeted=institutions.all
        )
        availability = SiteAvailability(store, config.gateway.name)

        prober = Prober(federation, pool, tracker, config.routing, on_round=availability.observe)

        def on_usage(rec: UsageRecord) -> None:
            usage.record(rec)
            quotas.settle(rec)
            metrics.observe(rec)
            log_access(rec)
            budgets.observe(rec)

        files_dir = Path(config.files.dir or Path(config.gateway.state_dir) / "files")
        files_api = FileService(store, LocalBlobStore(files_dir), config.files.max_upload_bytes)
        # training files: uploaded through the Files API, or placed by an operator
        files = ChainedSource(
            FileServiceSource(files_api),
            DirectoryFileSource(
                Path(config.training.files_dir or Path(config.gateway.state_dir) / "files")
            ),
        )
        jobs = JobService(config, store, federation, files, institutions.get, on_usage)
        svc = cls(
            config=config,
            admin_key=admin_key,
            store=store,
            audit=audit,
            federation=federation,
            pool=pool,
            tracker=tracker,
            prober=prober,
            router=Router(
                federation, make_policy(config.routing.policy, config.routing), config.routing
            ),
            scraper=MetricsScraper(federation, pool, config.routing.metrics_interval),
            proxy=Proxy(
                pool, tracker, config.routing, on_usage, tracer=tracer, on_suspect=prober.suspect
            ),
            keys=KeyService(store, audit, bus),
            institutions=institutions,
            usage=usage,
            jobs=jobs,
            bus=bus,
            presence=presence,
            quotas=quotas,
            budgets=budgets,
            availability=availability,
            retention=Retention(store, audit, config.retention),
            redis=redis,
            metrics=metrics,
            tracer=tracer,
            tracer_provider=tracer_provider,
            pseudonyms=Pseudonymizer(
                config.telemetry.pseudonym_key_env, Path(config.gateway.state_dir)
            ),
            on_usage=on_usage,
            oip_proxy=Proxy(pool, tracker, config.routing, _usage_recorded_by_caller),
            files=files_api,
            batches=BatchService(store, files_api, config.batch),
            overload=overload,
        )
        svc.batch_runner = BatchRunner(
            store=store,
            files=files_api,
            config=config.batch,
            dispatch=ProxyDispatch(svc.router, svc.proxy, federation, svc.institutions),
            access_point=config.gateway.name,
        )
        svc.batches.on_created = svc.batch_runner.wake
        return svc

    async def start(self, background: bool = True) -> None:
        await self.store.migrate()
        await self.audit.record_config_load(config_digest(self.config), self.config.gateway.name)
        await self.institutions.sync_from_config(list(self.config.institutions))
        await self.keys.load()
        await self._load_site_states()
        await self.budgets.load()
        await self.jobs.start()
        self.bus.subscribe(self.keys.on_event)
        self.bus.subscribe(self.institutions.on_event)
        self.bus.subscribe(self._on_site_event)
        if background:
            self._tasks = [
                asyncio.create_task(self.bus.run(), name="event-bus"),
                asyncio.create_task(self.presence.run(), name="presence"),
                asyncio.create_task(self._resync(), name="resync"),
                asyncio.create_task(self.prober.run(), name="prober"),
                asyncio.create_task(self.scraper.run(), name="metrics-scraper"),
                asyncio.create_task(self.usage.run(), name="usage-flush"),
                asyncio.create_task(self.budgets.run(), name="budgets"),
                asyncio.create_task(self.availability.run(), name="availability"),
                asyncio.create_task(self.retention.run(), name="retention"),
                asyncio.create_task(self.jobs.run(), name="training-jobs"),
                asyncio.create_task(self.overload.watch(), name="overload-watch"),
            ]
            if self.config.batch.enabled:
                self._tasks.append(
                    asyncio.create_task(self.batch_runner.run(), name="batch-runner")
                )

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        await self.jobs.aclose()
        await self.quotas.drain()
        await self.usage.aclose()
        await self.availability.flush()
        await self.pool.aclose()
        if self.redis is not None:
            await self.redis.aclose()
        shutdown = getattr(self.tracer_provider, "shutdown", None)
        if shutdown is not None:
            shutdown()
        await self.store.aclose()

    async def _on_site_event(self, event: dict[str, Any]) -> None:
        if event.get("type") != "site.state":
            return
        site, state = event.get("site"), event.get("state")
        if site in self.federation.sites and state in SiteState.__members__:
            self.federation.set_state(str(site), SiteState(str(state)))

    async def _resync(self) -> None:
        """Repair whatever events were missed (Redis down, a restart): reload from the store."""
        while True:
            await asyncio.sleep(RESYNC_SECONDS)
            try:
                await self.keys.load()
                await self.institutions.load()
                await self._load_site_states()
            except (SQLAlchemyError, OSError) as exc:
                log.warning("resync from the store failed: %s", type(exc).__name__)

    @property
    def degraded(self) -> list[str]:
        """Shared parts this access point is running without, for /readyz."""
        out = []
        if self.quotas.limiter.degraded:
            out.append("coordination")
        return out

    async def _load_site_states(self) -> None:
        async with self.store.session() as s:
            rows = (await s.execute(select(SiteStateRow))).scalars().all()
        for row in rows:
            if row.site in self.federation.sites:
                self.federation.set_state(row.site, SiteState(row.state))

    async def set_site_state(self, site: str, state: SiteState, actor: str) -> SiteState:
        if site not in self.federation.sites:
            raise NotFound(f"No site named '{site}'.", param="site")
        async with self.store.session() as s, s.begin():
            row = await s.get(SiteStateRow, site)
            before = SiteState(row.state) if row else self.federation.sites[site].state
            if row is None:
                s.add(
                    SiteStateRow(site=site, state=state.value, updated_at=time.time(), actor=actor)
                )
            else:
                row.state, row.updated_at, row.actor = state.value, time.time(), actor
            await self.audit.append(
                s,
                actor=actor,
                action=f"site.{state.value}",
                target=site,
                before={"state": before.value},
                after={"state": state.value},
            )
        self.federation.set_state(site, state)
        await self.bus.publish({"type": "site.state", "site": site, "state": state.value})
        log.info("site %s: %s -> %s by %s", site, before.value, state.value, actor)
        return before


def _usage_recorded_by_caller(record: UsageRecord) -> None:
    """The proxy's usage hook for callers that complete and record usage themselves."""
