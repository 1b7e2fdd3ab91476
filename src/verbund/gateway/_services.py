"""Everything an access point is made of, built once in the app factory.

Nothing here is a module-level global: each app owns its own :class:`Services`, so
tests can build as many access points as they like in one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select

from verbund.accounting import UsageRecorder
from verbund.audit import AuditLog
from verbund.batch import BatchRunner, BatchService
from verbund.config import FederationConfig, SiteState
from verbund.errors import NotFound
from verbund.federation import Federation, HealthTracker, Prober, TransportFactory, UpstreamPool
from verbund.files import FileService, LocalBlobStore
from verbund.gateway._dispatch import ProxyDispatch
from verbund.gateway._proxy import Proxy
from verbund.routing import PolicyName, Router, make_policy
from verbund.store import SiteStateRow, Store
from verbund.tenancy import InstitutionRegistry, KeyService

log = logging.getLogger("verbund.gateway")


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
    router: Router
    proxy: Proxy
    keys: KeyService
    institutions: InstitutionRegistry
    usage: UsageRecorder
    files: FileService
    batches: BatchService
    batch_runner: BatchRunner = field(init=False)
    started: float = field(default_factory=time.time)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    def build(
        cls,
        config: FederationConfig,
        admin_key: str | None,
        transport_factory: TransportFactory | None = None,
    ) -> Services:
        store = Store(config.store.url)
        audit = AuditLog(store)
        federation = Federation(config)
        pool = UpstreamPool(federation, config.routing, transport_factory)
        tracker = HealthTracker(config.routing)
        usage = UsageRecorder(
            store, Path(config.gateway.state_dir) / "usage-spool" / config.gateway.name
        )
        files_dir = Path(config.files.dir or Path(config.gateway.state_dir) / "files")
        files = FileService(store, LocalBlobStore(files_dir), config.files.max_upload_bytes)
        svc = cls(
            config=config,
            admin_key=admin_key,
            store=store,
            audit=audit,
            federation=federation,
            pool=pool,
            tracker=tracker,
            prober=Prober(federation, pool, tracker, config.routing),
            router=Router(federation, make_policy(PolicyName.least_outstanding)),
            proxy=Proxy(pool, tracker, config.routing, usage.record),
            keys=KeyService(store, audit),
            institutions=InstitutionRegistry(store, audit),
            usage=usage,
            files=files,
            batches=BatchService(store, files, config.batch),
        )
        svc.batch_runner = BatchRunner(
            store=store,
            files=files,
            config=config.batch,
            dispatch=ProxyDispatch(svc.router, svc.proxy, federation, svc.institutions),
            access_point=config.gateway.name,
        )
        svc.batches.on_created = svc.batch_runner.wake
        return svc

    async def start(self, background: bool = True) -> None:
        await self.store.migrate()
        await self.institutions.sync_from_config(list(self.config.institutions))
        await self.keys.load()
        await self._load_site_states()
        if background:
            self._tasks = [
                asyncio.create_task(self.prober.run(), name="prober"),
                asyncio.create_task(self.usage.run(), name="usage-flush"),
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
        await self.usage.aclose()
        await self.pool.aclose()
        await self.store.aclose()

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
        log.info("site %s: %s -> %s by %s", site, before.value, state.value, actor)
        return before
