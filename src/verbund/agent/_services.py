"""Everything one site agent is made of, built once in its app factory.

Like the access point's :class:`~verbund.gateway.Services`, nothing here is global: a
test builds as many agents in one process as it likes. Parts that other concerns of the
agent add (jobs, files, artefacts) are built in :meth:`AgentServices.build` and their
background loops listed in :meth:`AgentServices.loops`, one place for each.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import signal
import ssl
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from verbund.agent._auth import Credentials
from verbund.agent._catalogue import Catalogue, build_catalogue
from verbund.agent._config import (
    AgentSection,
    SiteAgentConfig,
    SiteModelConfig,
    load_site_config,
)
from verbund.agent._counters import EngineCounters
from verbund.agent._grants import Grants
from verbund.agent._lifecycle import SiteLifecycleAtAgent
from verbund.agent._meter import Meter
from verbund.agent._offer import Offer
from verbund.agent._ondemand import OnDemand
from verbund.audit import AuditLog
from verbund.federation import TransportFactory
from verbund.files import LocalBlobStore
from verbund.jobs import LanguageModels, SiteFacts, SiteJobs
from verbund.store import Store
from verbund.trust import SigningKey

__all__ = ["AgentServices"]

log = logging.getLogger("verbund.agent")

REFRESH_SECONDS = 0.25  # how often health verdicts are folded into the catalogue
WATCH_SECONDS = 1.0  # how often site.toml is checked for changes


@dataclass
class AgentServices:
    config: SiteAgentConfig
    credentials: Credentials
    store: Store
    state_dir: Path
    offer: Offer
    catalogue: Catalogue
    lifecycle: SiteLifecycleAtAgent
    blobs: LocalBlobStore  # the site's file store: files only it may hold, jobs' inputs
    jobs: SiteJobs  # training jobs run here, their artefacts and the models they trained
    # the fine-tuned language models served here (llama.cpp + LoRA adapter); None: no runner
    on_demand: OnDemand
    meter: Meter  # what the relay served, per institution and model (usage statements)
    counters: EngineCounters  # what the engines served, by their own token counters
    grants: Grants  # read grants for other sites' agents (files moving agent to agent)
    peers: httpx.AsyncClient  # this agent's client of other sites' agents
    audit: AuditLog
    llms: LanguageModels | None = None
    config_path: Path | None = None  # site.toml, read again on change / SIGHUP / reload
    env: Mapping[str, str] | None = None
    transport_factory: TransportFactory | None = None
    # the site's own key ([trust]): it signs checkpoints, statements, receipts; None: none
    signing: SigningKey | None = None
    checkpoint_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _retired: list[Offer] = field(default_factory=list)
    _file_digest: str = ""

    @classmethod
    def build(
        cls,
        config: SiteAgentConfig,
        env: Mapping[str, str] | None = None,
        *,
        config_path: Path | None = None,
        transport_factory: TransportFactory | None = None,
    ) -> AgentServices:
        store = Store(config.agent.store)
        state_dir = Path(config.agent.state_dir)
        catalogue = Catalogue()
        svc: AgentServices
        lifecycle = SiteLifecycleAtAgent(
            config.site.name, config.site.state, store, lambda: svc.refresh_catalogue()
        )
        blobs = LocalBlobStore(state_dir / "files")
        site = config.site
        jobs = SiteJobs(
            SiteFacts(
                name=site.name,
                region=site.region,
                jurisdiction=site.jurisdiction,
                max_data_class=site.max_data_class,
                certifications=tuple(site.certifications),
            ),
            config.runner,  # the runner as the agent started: a change needs a restart
            store,
            state_dir,
            blobs,
            training=config.training,
            state=lambda: lifecycle.state,  # a draining site starts no new jobs
        )
        workdir = getattr(jobs.runner, "workdir", None)
        llms = None
        if config.runner is not None and isinstance(workdir, Path):
            llms = LanguageModels(config.runner.base_models, workdir, jobs.models)
        meter = Meter(store, site.name)
        svc = cls(
            config=config,
            credentials=Credentials.from_config(config, env),
            store=store,
            state_dir=state_dir,
            offer=Offer(config, transport_factory),
            llms=llms,
            catalogue=catalogue,
            lifecycle=lifecycle,
            blobs=blobs,
            jobs=jobs,
            on_demand=OnDemand(
                config.on_demand,
                Path(config.agent.state_dir),
                lambda: svc.refresh_catalogue(),
                store=store,
                keep_on_stop=config.agent.keep_instances,
            ),
            grants=Grants(),
            peers=httpx.AsyncClient(
                verify=_peer_tls(config.agent),
                timeout=httpx.Timeout(60.0, connect=5.0),
                follow_redirects=False,
                trust_env=False,
            ),
            audit=AuditLog(store),
            config_path=config_path,
            env=env,
            transport_factory=transport_factory,
            _file_digest=_digest(config_path),
            signing=SigningKey.load(
                site.name,
                file=config.trust.signing_key_file,
                env=config.trust.signing_key_env,
                environ=env,
            ),
            meter=meter,
            counters=EngineCounters(meter),
        )
        return svc

    @property
    def site(self) -> str:
        return self.config.site.name

    def refresh_catalogue(self) -> bool:
        self.offer.keep_instances(self.on_demand.running())
        return self.catalogue.update(
            build_catalogue(
                self.offer,
                self.lifecycle.state,
                self.on_demand,
                signing_key=self.signing.public_b64 if self.signing else "",
            )
        )

    # -- changing the offer -------------------------------------------------------------------

    async def apply_config(self, config: SiteAgentConfig) -> None:
        """Make ``config`` the running one (already validated): a new offer, credentials."""
        if config.agent != self.config.agent:
            log.warning("site.toml: changes to [agent] take effect at the next start")
        if config.site.name != self.site:
            log.warning("site.toml: the site's name cannot change while the agent runs")
            config = config.model_copy(update={"site": self.config.site})
        credentials = Credentials.from_config(config, self.env)
        offer = Offer(self._with_fine_tuned(config), self.transport_factory)
        offer.carry_health(self.offer)
        old, self.offer = self.offer, offer
        self.config = config
        self.credentials.replace(credentials)
        self.on_demand.update(config.on_demand)
        await old.stop_probing()
        self._retired.append(old)
        if self._tasks:
            offer.start()
        self.refresh_catalogue()

    def _with_fine_tuned(self, config: SiteAgentConfig) -> SiteAgentConfig:
        """``config`` (site.toml) with the fine-tuned language models served here and
        their servers: they are offered like the file's own models."""
        if self.llms is None:
            return config
        cards, backends = self.llms.offered({m.name: m for m in config.models})
        if not cards:
            return config
        return config.model_copy(
            update={
                "models": [*config.models, *(SiteModelConfig(**c.model_dump()) for c in cards)],
                "backends": [*config.backends, *backends],
            }
        )

    async def reload_file(self) -> bool:
        """Read site.toml again; False if it did not change. Raises ConfigError (and
        keeps the running offer) if it has problems."""
        if self.config_path is None:
            return False
        digest = _digest(self.config_path)
        config = load_site_config(self.config_path)
        self._file_digest = digest
        if config == self.config:
            return False
        await self.apply_config(config)
        log.info(
            "site.toml taken up: %d models, %d backends", len(config.models), len(config.backends)
        )
        return True

    # -- background -------------------------------------------------------------------------

    def loops(self) -> dict[str, Coroutine[Any, Any, None]]:
        """The agent's background tasks, by name."""
        loops: dict[str, Coroutine[Any, Any, None]] = {
            "catalogue": self._refresh_loop(),
            "training-jobs": self.jobs.run(),
            "on-demand": self.on_demand.run(),
            "metering": self.meter.run(),
            "engine-counters": self.counters.run(lambda: self.offer),
        }
        if self.llms is not None:
            loops["fine-tuned-models"] = self._serve_loop(self.llms)
        if self.config_path is not None:
            loops["site-config-watch"] = self._watch_loop()
        return loops

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_SECONDS)
            self.refresh_catalogue()

    async def _serve_loop(self, llms: LanguageModels) -> None:
        """Serve the fine-tuned language models (new ones, ones whose server died, all of
        them after a restart) and renew the offer when what is served changed."""
        while True:
            if await llms.sync():
                await self.apply_config(self.config)
            await asyncio.sleep(self.config.training.poll_interval)

    async def _watch_loop(self) -> None:
        while True:
            await asyncio.sleep(WATCH_SECONDS)
            if self.config_path is not None and _digest(self.config_path) != self._file_digest:
                await self._reload_logged()

    async def _reload_logged(self) -> None:
        from verbund.errors import ConfigError

        try:
            await self.reload_file()
        except ConfigError as exc:
            self._file_digest = _digest(self.config_path)  # do not repeat until it changes
            log.error("site.toml not taken up, the running offer stays:\n%s", exc)

    async def start(self, background: bool = True) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        await self.store.migrate()
        await self.lifecycle.load()
        await self.on_demand.load()  # instances an earlier run left running
        self.refresh_catalogue()
        await self.jobs.start()
        if background:
            self.offer.start()
            self._tasks = [
                asyncio.create_task(coro, name=name) for name, coro in self.loops().items()
            ]
            if self.config_path is not None:
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    asyncio.get_running_loop().add_signal_handler(
                        signal.SIGHUP,
                        lambda: self._tasks.append(
                            asyncio.create_task(self._reload_logged(), name="sighup")
                        ),
                    )

    async def stop(self) -> None:
        if self.config_path is not None:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        await self.on_demand.aclose()
        for offer in [self.offer, *self._retired]:
            await offer.aclose()
        await self.jobs.aclose()
        await self.peers.aclose()
        if self.llms is not None:
            await self.llms.aclose()
        await self.meter.flush()
        await self.store.aclose()


def _peer_tls(agent: AgentSection) -> ssl.SSLContext | bool:
    """How this agent speaks TLS to other sites' agents (files moving agent to agent)."""
    if not (agent.peer_ca_file or agent.peer_cert):
        return True
    ctx = ssl.create_default_context(cafile=agent.peer_ca_file or None)
    if agent.peer_cert:  # a peer with mutual TLS admits only certificates from its CA
        ctx.load_cert_chain(agent.peer_cert, agent.peer_key)
    return ctx


def _digest(path: Path | None) -> str:
    if path is None:
        return ""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return ""
