"""Everything one site agent is made of, built once in its app factory.

Like the access point's :class:`~verbund.gateway.Services`, nothing here is global: a
test builds as many agents in one process as it likes. Parts that other concerns of the
agent add (jobs, files, artefacts) are built in :meth:`AgentServices.build` and their
background loops listed in :meth:`AgentServices.loops`, one place for each.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from verbund.agent._auth import Credentials
from verbund.agent._config import SiteAgentConfig
from verbund.files import LocalBlobStore
from verbund.jobs import SiteFacts, SiteJobs
from verbund.store import Store

__all__ = ["AgentServices"]

log = logging.getLogger("verbund.agent")


@dataclass
class AgentServices:
    config: SiteAgentConfig
    credentials: Credentials
    store: Store
    state_dir: Path
    blobs: LocalBlobStore  # the site's file store: files only it may hold, jobs' inputs
    jobs: SiteJobs  # training jobs run here, their artefacts and the models they trained
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    def build(cls, config: SiteAgentConfig, env: Mapping[str, str] | None = None) -> AgentServices:
        state_dir = Path(config.agent.state_dir)
        store = Store(config.agent.store)
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
            config.runner,
            store,
            state_dir,
            blobs,
            training=config.training,
            state=lambda: site.state,
        )
        return cls(
            config=config,
            credentials=Credentials.from_config(config, env),
            store=store,
            state_dir=state_dir,
            blobs=blobs,
            jobs=jobs,
        )

    @property
    def site(self) -> str:
        return self.config.site.name

    def loops(self) -> dict[str, Coroutine[Any, Any, None]]:
        """The agent's background tasks, by name."""
        return {"training-jobs": self.jobs.run()}

    async def start(self, background: bool = True) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        await self.store.migrate()
        await self.jobs.start()
        if background:
            self._tasks = [
                asyncio.create_task(coro, name=name) for name, coro in self.loops().items()
            ]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        await self.jobs.aclose()
        await self.store.aclose()
