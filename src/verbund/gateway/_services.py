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
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from redis.asyncio import Redis

from verbund.accounting import (
    BudgetService,
    PriceBook,
    Retention,
    SiteAvailability,
    UsageRecorder,
    UsageSink,
)
from verbund.admission import Admitter, BatchDispatch, ColdStart, Overload
from verbund.audit import AuditLog
from verbund.batch import BatchRunner, BatchService
from verbund.config import FederationConfig, SiteConfig, config_digest
from verbund.coordination import (
    EventBus,
    Limiter,
    LocalBus,
    LocalLimiter,
    LocalPresence,
    LocalSeats,
    Presence,
    QuotaGate,
    RedisBus,
    RedisLimiter,
    RedisPresence,
    RedisSeats,
    Seats,
)
from verbund.erasure import Erasure
from verbund.federation import (
    AgentClient,
    CatalogueSync,
    Federation,
    HealthTracker,
    MetricsScraper,
    NodeTimeCollector,
    Prober,
    SiteLifecycle,
    TransportFactory,
    UpstreamPool,
)
from verbund.files import (
    AgentBlobStore,
    BlobStore,
    FileLifecycle,
    FileService,
    LocalBlobStore,
    SealedBlobStore,
    file_key,
)
from verbund.gateway._overload import OverloadCollector
from verbund.identity import IdentityService
from verbund.jobs import (
    ChainedSource,
    DirectoryFileSource,
    FileServiceSource,
    JobService,
    SiteLink,
)
from verbund.proxy import Proxy
from verbund.responses import ResponseStore
from verbund.routing import Router, make_policy
from verbund.server import Drain
from verbund.store import STORE_FAILURES, Store, StoreClock
from verbund.telemetry import ClockSkewCollector, Metrics, Pseudonymizer, log_access, make_tracer
from verbund.telemetry._tracing import Tracer
from verbund.tenancy import InstitutionRegistry, KeyService
from verbund.trust import CheckpointBook, PartnerKeys, SigningKey

log = logging.getLogger("verbund.gateway")

RESYNC_SECONDS = 30.0
AgentTransport = Callable[[SiteConfig], httpx.AsyncBaseTransport | None]


@dataclass(frozen=True, slots=True)
class Coordination:
    """What access points share besides the store: events, presence, quota counters."""

    bus: EventBus
    presence: Presence
    quotas: QuotaGate
    seats: Seats
    redis: Redis | None = None


@dataclass(frozen=True, slots=True)
class Health:
    """How this access point knows its backends: clients, probes, engine metrics, and
    the catalogues (with their health verdicts) of the sites' agents."""

    pool: UpstreamPool
    tracker: HealthTracker
    prober: Prober
    scraper: MetricsScraper
    catalogues: CatalogueSync


@dataclass(frozen=True, slots=True)
class Accounting:
    """Usage records and what is computed from them."""

    usage: UsageSink  # every usage record goes here
    spool: UsageRecorder  # ...and, through it, to the store
    budgets: BudgetService
    availability: SiteAvailability
    retention: Retention
    prices: PriceBook  # the sites' price lists as they are now (announced ones included)


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
    clock: StoreClock  # the store's clock: batch leases' and budget months' time
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
    cold_start: ColdStart  # on-demand models that are not running: start, wait, report
    router: Router
    proxy: Proxy
    overload: Overload
    drain: Drain  # this access point leaving service (SIGTERM, POST /admin/drain)
    # accounting
    accounting: Accounting
    # work that outlives a request
    files: FileService
    batches: BatchService
    batch_runner: BatchRunner
    jobs: JobService
    agents: dict[str, AgentClient]  # the sites' agents (closed with the catalogues)
    responses: ResponseStore  # stored responses of institutions that opt in
    # shared state and observation
    coordination: Coordination
    telemetry: Telemetry
    identity: IdentityService  # people: sign-in, sessions, role-scoped admin keys
    checkpoints: CheckpointBook  # signed checkpoints of the audit chain, ours and partners'
    erasure: Erasure  # everything of one key or person, on request
    started: float = field(default_factory=time.time)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    def build(
        cls,
        config: FederationConfig,
        admin_key: str | None,
        transport_factory: TransportFactory | None = None,
        tracer: Tracer | None = None,
        local_clock: Callable[[], float] = time.time,
        agent_transport: AgentTransport | None = None,
    ) -> Services:
        """``local_clock`` is this host's clock (tests inject one that is off); what access
        points decide together by time goes by the store's or Redis's clock instead.
        ``agent_transport`` puts in-process site agents behind their clients (tests)."""
        store = Store(config.store.url)
        clock = StoreClock(store, local_clock)
        audit = AuditLog(store)
        federation = Federation(config)
        coordination = _coordination(config, local_clock)
        telemetry = _telemetry(config, federation, tracer)
        institutions = InstitutionRegistry(store, audit, coordination.bus)
        keys = KeyService(store, audit, coordination.bus)
        accounting = _accounting(
            config, store, audit, institutions, coordination, telemetry, clock.now, federation
        )
        agents = _agents(config, agent_transport)  # one client per site agent, shared
        checkpoints = _checkpoints(config, store, audit)
        # sites' agents sign the chain's head with their own keys (docs/trust.md)
        checkpoints.site_signers = {n: c.sign_checkpoint for n, c in agents.items()}
        health = _health(
            config,
            federation,
            store,
            transport_factory,
            agents,
            accounting.availability,
            checkpoints.keys,
        )
        router = Router(
            federation, make_policy(config.routing.policy, config.routing), config.routing
        )
        overload = Overload(config.gateway.max_in_flight, config.gateway.shed_after_lag)
        telemetry.metrics.registry.register(OverloadCollector(overload))
        proxy = Proxy(
            health.pool,
            health.tracker,
            config.routing,
            tracer=telemetry.tracer,
            on_suspect=health.prober.suspect,
            stream_write_timeout=config.limits.stream_write_timeout,
        )
        files = FileService(
            store,
            _blobs(config),
            config.files.max_upload_bytes,
            sites={name: AgentBlobStore(client) for name, client in agents.items()},
        )
        accounting.retention.add_purge(FileLifecycle(store, files).purge_expired)
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
            clock=clock.now,
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
            config,
            store,
            federation,
            training_files,
            institutions.get,
            accounting.usage.emit,
            links={name: SiteLink(client) for name, client in agents.items()},
        )
        telemetry.metrics.registry.register(
            ClockSkewCollector(lambda: _clock_skew(clock, coordination))
        )
        return cls(
            config=config,
            admin_key=admin_key,
            store=store,
            clock=clock,
            audit=audit,
            checkpoints=checkpoints,
            erasure=Erasure(store, files, audit, agents),
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
                seats=coordination.seats,
                overload=overload,
                limits=config.limits,
                usage=accounting.usage,
                pseudonyms=telemetry.pseudonyms,
                tracer=telemetry.tracer,
            ),
            cold_start=ColdStart(
                federation,
                health.catalogues.agents,
                lambda: health.catalogues.applied,
                config.routing,
            ),
            router=router,
            proxy=proxy,
            overload=overload,
            drain=Drain(config.gateway.drain_grace),
            accounting=accounting,
            files=files,
            batches=batches,
            batch_runner=batch_runner,
            jobs=jobs,
            agents=agents,
            responses=ResponseStore(
                store, config.responses.key_env, config.responses.retention_hours
            ),
            coordination=coordination,
            telemetry=telemetry,
            identity=IdentityService(
                config.auth, store, audit, coordination.bus, telemetry.pseudonyms
            ),
        )

    async def start(self, background: bool = True) -> None:
        await self.store.migrate()
        await self.clock.sync()
        await self.audit.record_config_load(config_digest(self.config), self.config.gateway.name)
        await self.institutions.sync_from_config(list(self.config.institutions))
        await self.keys.load()
        await self.identity.start()
        await self.lifecycle.load()
        await self.health.catalogues.load()  # the sites' last catalogues, until agents answer
        await self._prune_seats(keep_own=False)
        await self.accounting.budgets.load()
        await self.jobs.start()
        bus = self.coordination.bus
        for subscriber in (
            self.keys.on_event,
            self.institutions.on_event,
            self.lifecycle.on_event,
            self.identity.admin_keys.on_event,
            self.identity.people.on_event,
        ):
            bus.subscribe(subscriber)
        if not background:
            return
        loops: dict[str, Coroutine[Any, Any, None]] = {
            "event-bus": bus.run(),
            "presence": self.coordination.presence.run(),
            "resync": self._resync(),
            "prober": self.health.prober.run(),
            "catalogues": self.health.catalogues.run(),
            "on-demand-demand": self.cold_start.run(),
            "on-demand-node-time": NodeTimeCollector(
                self.federation, self.agents, self.store
            ).run(),
            "metrics-scraper": self.health.scraper.run(),
            "usage-flush": self.accounting.spool.run(),
            "budgets": self.accounting.budgets.run(),
            "availability": self.accounting.availability.run(),
            "retention": self.accounting.retention.run(),
            "file-sweep": self.files.run_sweeper(),
            "store-clock": self.clock.run(),
            "training-jobs": self.jobs.run(),
            "overload-watch": self.overload.watch(),
            "responses-purge": self.responses.run_purger(self.config.responses.purge_interval),
            "session-purge": self.identity.run_purge(),
            "audit-checkpoints": self.checkpoints.run(),
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
        await self.identity.aclose()
        await self.coordination.quotas.drain()
        if isinstance(self.coordination.seats, RedisSeats):
            await self.coordination.seats.drain()
        await self.accounting.spool.aclose()
        await self.accounting.availability.flush()
        await self.health.catalogues.aclose()
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
                await self.identity.reload()
                await self.institutions.load()
                await self.lifecycle.load()
                await self._prune_seats(keep_own=True)
            except STORE_FAILURES as exc:
                log.warning("resync from the store failed: %s", type(exc).__name__)

    async def _prune_seats(self, *, keep_own: bool) -> None:
        """Seats held by access points that are gone (or by this one before a restart)
        are given back."""
        seats = self.coordination.seats
        if not isinstance(seats, RedisSeats):
            return
        alive = {str(a.get("name")) for a in await self.coordination.presence.live()}
        own = self.config.gateway.name
        await seats.prune(alive if keep_own else alive - {own})

    @property
    def clock_skew(self) -> dict[str, float | None]:
        """How far this host's clock is ahead of the store's and Redis's (None: unknown)."""
        return _clock_skew(self.clock, self.coordination)

    @property
    def degraded(self) -> list[str]:
        """Shared parts this access point is running without, for /readyz."""
        return ["coordination"] if self.coordination.quotas.limiter.degraded else []


def _clock_skew(clock: StoreClock, coordination: Coordination) -> dict[str, float | None]:
    skew: dict[str, float | None] = {"store": clock.skew}
    if coordination.redis is not None:
        skew["redis"] = coordination.quotas.limiter.skew
    return skew


def _agents(
    config: FederationConfig, agent_transport: AgentTransport | None
) -> dict[str, AgentClient]:
    """One client per site that names an agent: catalogue, jobs and files share it."""
    return {
        s.name: AgentClient.for_site(
            s,
            transport=agent_transport(s) if agent_transport else None,
            connect_timeout=config.routing.connect_timeout,
        )
        for s in config.sites
        if s.agent_url
    }


def _coordination(config: FederationConfig, local_clock: Callable[[], float]) -> Coordination:
    name = config.gateway.name
    if not config.coordination.redis_url:
        return Coordination(
            LocalBus(), LocalPresence(name), QuotaGate(LocalLimiter()), LocalSeats()
        )
    redis = Redis.from_url(
        config.coordination.redis_url, socket_timeout=1.0, socket_connect_timeout=1.0
    )
    presence = RedisPresence(redis, name)
    limiter: Limiter = RedisLimiter(redis, lambda: presence.last_count, clock=local_clock)
    seats = RedisSeats(redis, name, lambda: presence.last_count)
    return Coordination(RedisBus(redis, name), presence, QuotaGate(limiter), seats, redis)


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
    clock: Callable[[], float],
    federation: Federation,
) -> Accounting:
    prices = PriceBook(federation.site_configs)  # live: a site's announced prices count
    spool = UsageRecorder(
        store, Path(config.gateway.state_dir) / "usage-spool" / config.gateway.name
    )
    budgets = BudgetService(
        store,
        prices,
        flush=spool.flush,
        budgeted=institutions.all,
        clock=clock,  # months turn by the store's clock at every access point alike
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
        prices=prices,
    )


def _blobs(config: FederationConfig) -> BlobStore:
    """The file store; sealed (AES-GCM) when the file key's variable is set."""
    local = LocalBlobStore(Path(config.files.dir or Path(config.gateway.state_dir) / "files"))
    key = file_key(config.trust.file_key_env)
    return local if key is None else SealedBlobStore(local, key)


def _checkpoints(config: FederationConfig, store: Store, audit: AuditLog) -> CheckpointBook:
    trust = config.trust
    name = trust.signing_name or config.gateway.name
    signing = SigningKey.load(name, file=trust.signing_key_file, env=trust.signing_key_env)
    partners = dict(trust.partners)
    if signing is not None:
        partners.setdefault(name, signing.public_b64)
    return CheckpointBook(
        store, audit, PartnerKeys(partners), trust.chain, signing, trust.checkpoint_interval
    )


def _health(
    config: FederationConfig,
    federation: Federation,
    store: Store,
    transport_factory: TransportFactory | None,
    agents: dict[str, AgentClient],
    availability: SiteAvailability,
    keys: PartnerKeys | None = None,
) -> Health:
    pool = UpstreamPool(federation, config.routing, transport_factory)
    tracker = HealthTracker(config.routing, federation)
    prober = Prober(federation, pool, tracker, config.routing, on_round=availability.observe)
    catalogues = CatalogueSync(federation, pool, store, agents, keys=keys)
    return Health(
        pool,
        tracker,
        prober,
        MetricsScraper(federation, pool, config.routing.metrics_interval, agents),
        catalogues,
    )
