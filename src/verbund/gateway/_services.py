"""Everything an access point is made of, built once in the app factory.

Nothing here is a module-level global: each app owns its own :class:`Services`, so
tests can build as many access points as they like in one process. The parts are
grouped by concern; each group is built by one small function, and the background
tasks the access point runs are listed in one place (:meth:`Services.start`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from sqlalchemy.exc import SQLAlchemyError

from verbund.accounting import (
    BudgetService,
    PriceBook,
    Retention,
    SiteAvailability,
    UsageRecorder,
    UsageSink,
)
from verbund.admission import Admitter, BatchDispatch
from verbund.audit import AuditLog
from verbund.batch import BatchRunner, BatchService
from verbund.config import FederationConfig, config_digest
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
from verbund.federation import (
    Federation,
    HealthTracker,
    MetricsScraper,
    Prober,
    SiteLifecycle,
    TransportFactory,
    UpstreamPool,
)
from verbund.files import FileService, LocalBlobStore
from verbund.gateway._overload import Overload, OverloadCollector
from verbund.jobs import ChainedSource, DirectoryFileSource, FileServiceSource, JobService
from verbund.proxy import Proxy
from verbund.routing import Router, make_policy
from verbund.store import Store
from verbund.telemetry import Metrics, Pseudonymizer, log_access, make_tracer
from verbund.telemetry._tracing import Tracer
from verbund.tenancy import InstitutionRegistry, KeyService

log = logging.getLogger("verbund.gateway")

RESYNC_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class Coordination:
    """What access points share besides the store: events, presence, quota counters."""

    bus: EventBus
    presence: Presence
    quotas: QuotaGate
    redis: Redis | None = None


@dataclass(frozen=True, slots=True)
class Health:
    """How this access point knows its backends: clients, probes, engine metrics."""

    pool: UpstreamPool
    tracker: HealthTracker
    prober: Prober
    scraper: MetricsScraper


@dataclass(frozen=True, slots=True)
class Accounting:
    """Usage records and what is computed from them."""

    usage: UsageSink  # every usage record goes here
    spool: UsageRecorder  # ...and, through it, to the store
    budgets: BudgetService
    availability: SiteAvailability
    retention: Retention


@dataclass(frozen=True, slots=True)
class Telemetry:
    metrics: Metrics
    tracer: Tracer
    pseudonyms: Pseudonymizer
    provider: object | None = None  # OpenTelemetry's SDK provider, shut down at the end


@dataclass
class Services:
    config: FederationConfig
    admin_key: str | None
    store: Store
    audit: AuditLog
    # the federation and its sites
    federation: Federation
    lifecycle: SiteLifecycle
    health: Health
    # tenants
    keys: KeyService
    institutions: InstitutionRegistry
    # the request path: admission, routing, proxy
    admission: Admitter
    router: Router
    proxy: Proxy
    overload: Overload
    # accounting
    accounting: Accounting
    # work that outlives a request
    files: FileService
    batches: BatchService
    batch_runner: BatchRunner
    jobs: JobService
    # shared state and observation
    coordination: Coordination
    telemetry: Telemetry
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
        coordination = _coordination(config)
        telemetry = _telemetry(config, federation, tracer)
        institutions = InstitutionRegistry(store, audit, coordination.bus)
        keys = KeyService(store, audit, coordination.bus)
        accounting = _accounting(config, store, audit, institutions, coordination, telemetry)
        health = _health(config, federation, transport_factory, accounting.availability)
        router = Router(
            federation, make_policy(config.routing.policy, config.routing), config.routing
        )
        proxy = Proxy(
            health.pool,
            health.tracker,
            config.routing,
            tracer=telemetry.tracer,
            on_suspect=health.prober.suspect,
        )
        overload = Overload(config.gateway.max_in_flight, config.gateway.shed_after_lag)
        telemetry.metrics.registry.register(OverloadCollector(overload))
        files = FileService(
            store,
            LocalBlobStore(Path(config.files.dir or Path(config.gateway.state_dir) / "files")),
            config.files.max_upload_bytes,
        )
        batches = BatchService(store, files, config.batch)
        batch_runner = BatchRunner(
            store=store,
            files=files,
            config=config.batch,
            dispatch=BatchDispatch(
                router=router,
                proxy=proxy,
                federation=federation,
                institutions=institutions,
                keys=keys,
                quotas=coordination.quotas,
                usage=accounting.usage,
                default_max_tokens=config.routing.default_max_tokens,
                pseudonyms=telemetry.pseudonyms,
            ),
            access_point=config.gateway.name,
        )
        batches.on_created = batch_runner.wake
        # training files: uploaded through the Files API, or placed by an operator
        training_files = ChainedSource(
            FileServiceSource(files),
            DirectoryFileSource(
                Path(config.training.files_dir or Path(config.gateway.state_dir) / "files")
            ),
        )
        jobs = JobService(
            config, store, federation, training_files, institutions.get, accounting.usage.emit
        )
        return cls(
            config=config,
            admin_key=admin_key,
            store=store,
            audit=audit,
            federation=federation,
            lifecycle=SiteLifecycle(federation, store, audit, coordination.bus.publish),
            health=health,
            keys=keys,
            institutions=institutions,
            admission=Admitter(
                access_point=config.gateway.name,
                federation=federation,
                router=router,
                budgets=accounting.budgets,
                quotas=coordination.quotas,
                usage=accounting.usage,
                pseudonyms=telemetry.pseudonyms,
                tracer=telemetry.tracer,
            ),
            router=router,
            proxy=proxy,
            overload=overload,
            accounting=accounting,
            files=files,
            batches=batches,
            batch_runner=batch_runner,
            jobs=jobs,
            coordination=coordination,
            telemetry=telemetry,
        )

    async def start(self, background: bool = True) -> None:
        await self.store.migrate()
        await self.audit.record_config_load(config_digest(self.config), self.config.gateway.name)
        await self.institutions.sync_from_config(list(self.config.institutions))
        await self.keys.load()
        await self.lifecycle.load()
        await self.accounting.budgets.load()
        await self.jobs.start()
        bus = self.coordination.bus
        for subscriber in (self.keys.on_event, self.institutions.on_event, self.lifecycle.on_event):
            bus.subscribe(subscriber)
        if not background:
            return
        loops: dict[str, Coroutine[Any, Any, None]] = {
            "event-bus": bus.run(),
            "presence": self.coordination.presence.run(),
            "resync": self._resync(),
            "prober": self.health.prober.run(),
            "metrics-scraper": self.health.scraper.run(),
            "usage-flush": self.accounting.spool.run(),
            "budgets": self.accounting.budgets.run(),
            "availability": self.accounting.availability.run(),
            "retention": self.accounting.retention.run(),
            "training-jobs": self.jobs.run(),
            "overload-watch": self.overload.watch(),
        }
        if self.config.batch.enabled:
            loops["batch-runner"] = self.batch_runner.run()
        self._tasks = [asyncio.create_task(coro, name=name) for name, coro in loops.items()]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        await self.jobs.aclose()
        await self.coordination.quotas.drain()
        await self.accounting.spool.aclose()
        await self.accounting.availability.flush()
        await self.health.pool.aclose()
        if self.coordination.redis is not None:
            await self.coordination.redis.aclose()
        shutdown = getattr(self.telemetry.provider, "shutdown", None)
        if shutdown is not None:
            shutdown()
        await self.store.aclose()

    async def _resync(self) -> None:
        """Repair whatever events were missed (Redis down, a restart): reload from the store."""
        while True:
            await asyncio.sleep(RESYNC_SECONDS)
            try:
                await self.keys.load()
                await self.institutions.load()
                await self.lifecycle.load()
            except (SQLAlchemyError, OSError) as exc:
                log.warning("resync from the store failed: %s", type(exc).__name__)

    @property
    def degraded(self) -> list[str]:
        """Shared parts this access point is running without, for /readyz."""
        return ["coordination"] if self.coordination.quotas.limiter.degraded else []


def _coordination(config: FederationConfig) -> Coordination:
    if not config.coordination.redis_url:
        return Coordination(
            LocalBus(), LocalPresence(config.gateway.name), QuotaGate(LocalLimiter())
        )
    redis = Redis.from_url(
        config.coordination.redis_url, socket_timeout=1.0, socket_connect_timeout=1.0
    )
    presence = RedisPresence(redis, config.gateway.name)
    limiter: Limiter = RedisLimiter(redis, lambda: presence.last_count)
    return Coordination(RedisBus(redis, config.gateway.name), presence, QuotaGate(limiter), redis)


def _telemetry(
    config: FederationConfig, federation: Federation, tracer: Tracer | None
) -> Telemetry:
    provider: object | None = None
    if tracer is None:
        tracer, provider = make_tracer(config.telemetry.otlp_endpoint, config.gateway.name)
    return Telemetry(
        metrics=Metrics(federation),
        tracer=tracer,
        pseudonyms=Pseudonymizer(
            config.telemetry.pseudonym_key_env, Path(config.gateway.state_dir)
        ),
        provider=provider,
    )


def _accounting(
    config: FederationConfig,
    store: Store,
    audit: AuditLog,
    institutions: InstitutionRegistry,
    coordination: Coordination,
    telemetry: Telemetry,
) -> Accounting:
    spool = UsageRecorder(
        store, Path(config.gateway.state_dir) / "usage-spool" / config.gateway.name
    )
    budgets = BudgetService(
        store, PriceBook(config.sites), flush=spool.flush, budgeted=institutions.all
    )
    usage = UsageSink(
        [
            spool.record,
            coordination.quotas.settle,
            telemetry.metrics.observe,
            log_access,
            budgets.observe,
        ]
    )
    return Accounting(
        usage=usage,
        spool=spool,
        budgets=budgets,
        availability=SiteAvailability(store, config.gateway.name),
        retention=Retention(store, audit, config.retention),
    )


def _health(
    config: FederationConfig,
    federation: Federation,
    transport_factory: TransportFactory | None,
    availability: SiteAvailability,
) -> Health:
    pool = UpstreamPool(federation, config.routing, transport_factory)
    tracker = HealthTracker(config.routing, federation)
    prober = Prober(federation, pool, tracker, config.routing, on_round=availability.observe)
    return Health(
        pool, tracker, prober, MetricsScraper(federation, pool, config.routing.metrics_interval)
    )
