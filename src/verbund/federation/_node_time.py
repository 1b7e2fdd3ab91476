"""Node time of the sites' on-demand instances, collected from their agents for the usage
reports: what serving a model cost a site (CPU and GPU seconds held, idle included), per
model and UTC hour, next to the tokens it served.

Each agent counts its own (:mod:`verbund.agent._node_time`); this access point asks every
agent whose site starts models on demand once a minute for the hours since the last one
it holds (the current hour keeps growing, so it is asked again) and stores them as they
are, in :class:`~verbund.store.NodeTimeRow`. Storing, not adding, makes the collection
idempotent: several access points, or one asking twice, store the same numbers.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any

from sqlalchemy import func, select

from verbund.errors import ApiError
from verbund.federation._agent import AgentClient
from verbund.federation._federation import Federation
from verbund.store import STORE_FAILURES, NodeTimeRow, Store

__all__ = ["NodeTimeCollector"]

log = logging.getLogger("verbund.federation")

COLLECT_SECONDS = 60.0
HOUR = 3600


class NodeTimeCollector:
    def __init__(self, federation: Federation, agents: dict[str, AgentClient], store: Store):
        self._federation = federation
        self._agents = agents
        self._store = store

    def _sites(self) -> list[str]:
        """Sites with an agent that start models on demand (others hold no node time)."""
        return [
            name
            for name, site in self._federation.sites.items()
            if name in self._agents and site.on_demand
        ]

    async def collect_once(self) -> int:
        """Ask each such agent; answers how many hours were stored."""
        stored = 0
        for site in self._sites():
            try:
                since = await self._latest(site)
                hours = await self._agents[site].node_time(since)
                stored += await self._keep(site, hours)
            except ApiError as exc:
                log.info("site %s: node time not collected: %s", site, exc.code)
            except STORE_FAILURES as exc:
                log.warning("site %s: node time not stored: %s", site, type(exc).__name__)
        return stored

    async def _latest(self, site: str) -> float:
        async with self._store.session() as s:
            latest = await s.scalar(
                select(func.max(NodeTimeRow.hour)).where(NodeTimeRow.site == site)
            )
        return float(latest) if latest is not None else 0.0

    async def _keep(self, site: str, hours: list[dict[str, Any]]) -> int:
        rows = [_row(h) for h in hours]
        kept = [r for r in rows if r is not None]
        if not kept:
            return 0
        now = time.time()
        async with self._store.session() as s, s.begin():
            for model, hour, cpu, gpu in kept:
                row = await s.get(NodeTimeRow, (site, model, hour))
                if row is None:
                    s.add(
                        NodeTimeRow(
                            site=site, model=model, hour=hour, cpu_seconds=cpu,
                            gpu_seconds=gpu, updated_at=now,
                        )
                    )  # fmt: skip
                else:
                    row.cpu_seconds, row.gpu_seconds, row.updated_at = cpu, gpu, now
        return len(kept)

    async def run(self) -> None:
        while True:
            try:
                await self.collect_once()
            except Exception:  # collecting must go on
                log.exception("node time collection failed")
            await asyncio.sleep(COLLECT_SECONDS)


def _row(h: dict[str, Any]) -> tuple[str, int, float, float] | None:
    """One hour as the agent sent it, checked (an agent's word is not trusted blindly)."""
    model = h.get("model")
    numbers = [h.get("hour"), h.get("cpu_seconds", 0.0), h.get("gpu_seconds", 0.0)]
    if not isinstance(model, str) or not 0 < len(model) <= 256:
        return None
    checked = [
        float(n)
        for n in numbers
        if isinstance(n, int | float) and not isinstance(n, bool) and math.isfinite(n) and n >= 0
    ]
    if len(checked) != 3 or checked[0] % HOUR:
        return None
    hour, cpu, gpu = checked
    return model, int(hour), cpu, gpu
