"""Following the catalogues of the sites' agents, and applying them while serving.

One task per site with an agent long-polls its catalogue (``GET /catalogue`` with the
last ETag and ``wait``): the agent answers at once when something changed and otherwise
holds the request until it does, so a change reaches the access point within one round
trip and an idle site costs one request per ``wait`` seconds. Each new catalogue is
applied to the live federation (:meth:`Federation.apply_site`) and the clients' pool, and
kept in the store, so a restarted access point serves from the last catalogue before its
agent has answered.

An agent that does not answer leaves the site as it was last announced (marked stale in
``/status``); the task retries with a growing pause and resynchronises once the agent
is back. Nothing is taken away because an agent is away: its backends keep serving, and
requests that fail there eject them as they would anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from verbund.config import BackendConfig
from verbund.errors import ApiError, ConfigError
from verbund.federation._agent import AgentClient, parse_catalogue
from verbund.federation._backend import Backend
from verbund.federation._catalogue import SiteCatalogue, accepted
from verbund.federation._federation import Federation
from verbund.federation._upstream import UpstreamPool
from verbund.store import STORE_FAILURES, SiteCatalogueRow, Store
from verbund.trust import PartnerKeys

__all__ = ["CatalogueSync", "SiteSync"]

log = logging.getLogger("verbund.federation")

RETRY_MIN = 0.5
RETRY_MAX = 10.0


@dataclass
class SiteSync:
    """How current this access point's picture of one site is."""

    etag: str = ""
    received_at: float = 0.0  # wall clock of the catalogue in use (0: none yet)
    contact: bool = False  # the last call to the agent succeeded
    error: str = ""  # why the last call failed
    source: str = "none"  # "agent" (live), "store" (restored after a restart), "none"
    refused: list[str] = field(default_factory=list)
    # what became of the signing key the agent announces (PartnerKeys.announce)
    signing_key: str = "none"

    @property
    def stale(self) -> bool:
        return not self.contact

    def view(self) -> dict[str, Any]:
        return {
            "etag": self.etag,
            "source": self.source,
            "stale": self.stale,
            "age_seconds": round(time.time() - self.received_at, 3) if self.received_at else None,
            "error": self.error or None,
            "refused": list(self.refused),
            "signing_key": self.signing_key,
        }


class CatalogueSync:
    def __init__(
        self,
        federation: Federation,
        pool: UpstreamPool,
        store: Store,
        agents: Mapping[str, AgentClient],
        *,
        wait: float = 20.0,
        env: Mapping[str, str] | None = None,
        keys: PartnerKeys | None = None,
    ) -> None:
        self._federation = federation
        # the partners' keys: agents' announced keys are offered to it (never replacing
        # a configured one); None: announced keys are ignored
        self._keys = keys
        self._pool = pool
        self._store = store
        self.agents = dict(agents)
        self._wait = wait
        self._env = env
        self.sites: dict[str, SiteSync] = {name: SiteSync() for name in self.agents}
        self.applied = asyncio.Event()  # set whenever a catalogue was applied (tests wait)

    # -- restoring and applying ------------------------------------------------------------

    async def load(self) -> None:
        """Apply the last catalogues in the store (announced before a restart)."""
        try:
            async with self._store.session() as s:
                rows = list(await s.scalars(select(SiteCatalogueRow)))
        except STORE_FAILURES as exc:
            log.warning("last site catalogues unreadable: %s", type(exc).__name__)
            return
        for row in rows:
            if row.site not in self.agents:
                continue
            try:
                catalogue = parse_catalogue(row.site, row.body.encode())
            except ApiError:
                continue
            self.apply(row.site, catalogue, row.etag, row.received_at, source="store")

    def apply(
        self,
        site: str,
        catalogue: SiteCatalogue,
        etag: str,
        received_at: float | None = None,
        source: str = "agent",
    ) -> None:
        """Make ``catalogue`` the live offer of ``site``; synchronous, so no request sees
        half of it."""
        live = self._federation.sites[site]
        agent = self.agents[site]
        relay = agent.relay_url if live.config.ingress == "agent" else None
        # what this access point was configured with, not what the last catalogue made of it
        config = self._federation.config.site(site) or live.config
        offer = accepted(config, catalogue, relay)
        backends, refused = self._with_credentials(offer.backends, relay is not None)
        live.on_demand = offer.on_demand  # before the index is rebuilt: it lists such sites
        added, removed = self._federation.apply_site(site, offer.site, offer.models, backends)
        for b in removed:
            self._pool.remove(b)
        headers = agent.auth_headers() if relay is not None else {}
        tls = agent.tls if relay is not None else None
        for b in added:
            self._pool.add(b, headers or self._backend_headers(b), tls)
        live.announced_state = offer.state
        self._take_key(site, catalogue.site.signing_key, relayed=relay is not None)
        _apply_health(live.backends, offer.health, time.monotonic())
        state = self.sites[site]
        state.etag = etag
        state.received_at = received_at if received_at is not None else time.time()
        state.source = source
        state.refused = offer.refused + refused
        if added or removed:
            log.info(
                "site %s: catalogue %s applied (+%d -%d backends)",
                site, etag, len(added), len(removed),
            )  # fmt: skip
        self.applied.set()
        self.applied = asyncio.Event()

    def _take_key(self, site: str, announced: str, *, relayed: bool) -> None:
        """The agent's announced key, as :meth:`PartnerKeys.announce` decides; the site
        signs receipts only if that key counts and its inference goes through the agent
        (which alone can sign for what it served)."""
        verdict = self._keys.announce(site, announced) if self._keys is not None else "none"
        state = self.sites[site]
        if verdict != state.signing_key and verdict.startswith("refused"):
            log.warning("site %s: announced signing key %s", site, verdict)
        state.signing_key = verdict
        self._federation.sites[site].signs_receipts = relayed and verdict in (
            "configured",
            "announced",
        )

    def _with_credentials(
        self, backends: list[BackendConfig], relayed: bool
    ) -> tuple[list[BackendConfig], list[str]]:
        """Direct ingress to a backend that needs a key works only if this access point
        has it; otherwise the backend is left out (the site should use ingress = "agent")."""
        if relayed:
            return backends, []
        env = self._env if self._env is not None else os.environ
        keep: list[BackendConfig] = []
        refused: list[str] = []
        for b in backends:
            if b.api_key_env and not env.get(b.api_key_env):
                refused.append(f"backend {b.name!r}: ${b.api_key_env} not set here")
            else:
                keep.append(b)
        return keep, refused

    def _backend_headers(self, b: Backend) -> dict[str, str]:
        env = self._env if self._env is not None else os.environ
        if b.config.api_key_env and env.get(b.config.api_key_env):
            return {"authorization": f"Bearer {env[b.config.api_key_env]}"}
        return {}

    async def _keep(self, site: str, etag: str, body: bytes) -> None:
        try:
            async with self._store.session() as s, s.begin():
                row = await s.get(SiteCatalogueRow, site)
                if row is None:
                    s.add(
                        SiteCatalogueRow(
                            site=site, etag=etag, body=body.decode(), received_at=time.time()
                        )
                    )
                else:
                    row.etag, row.body, row.received_at = etag, body.decode(), time.time()
        except STORE_FAILURES as exc:  # the live offer is applied; the copy waits for the next
            log.warning("site %s: catalogue not kept: %s", site, type(exc).__name__)

    # -- following the agents --------------------------------------------------------------

    async def refresh(self, site: str, wait: float = 0.0) -> bool:
        """One call to ``site``'s agent; True if a new catalogue was applied. Failures
        mark the site stale and raise the client's error."""
        state = self.sites[site]
        try:
            got = await self.agents[site].catalogue(state.etag, wait)
        except ApiError as exc:
            if state.contact:
                log.warning("site %s: agent unreachable, serving the last catalogue", site)
            state.contact, state.error = False, exc.message
            raise
        if not state.contact and state.error:
            log.info("site %s: agent answers again", site)
        state.contact, state.error = True, ""
        if got is None:  # the agent confirms the catalogue in use (restored or not)
            if state.etag:
                state.source = "agent"
            return False
        catalogue, etag, body = got
        self.apply(site, catalogue, etag)
        await self._keep(site, etag, body)
        return True

    async def follow(self, site: str) -> None:
        """Forever: long-poll ``site``'s agent, retrying with a growing pause."""
        pause = RETRY_MIN
        while True:
            try:
                await self.refresh(site, wait=self._wait if self.sites[site].contact else 0.0)
                await self._pool.reap()  # clients of backends gone, once they are idle
                pause = RETRY_MIN
            except ApiError:
                await asyncio.sleep(pause)
                pause = min(RETRY_MAX, pause * 2)
            except ConfigError:  # e.g. a malformed backend: logged, retried later
                log.exception("site %s: catalogue not applied", site)
                await asyncio.sleep(RETRY_MAX)

    async def run(self) -> None:
        if not self.agents:
            return
        tasks = [asyncio.create_task(self.follow(s), name=f"catalogue-{s}") for s in self.agents]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await t

    async def aclose(self) -> None:
        for agent in self.agents.values():
            await agent.aclose()


TRUST_OWN_ANSWERS = 10.0  # seconds: an answer from a backend outweighs the agent's "down"


def _apply_health(backends: list[Backend], health: Mapping[str, bool | None], now: float) -> None:
    """The agent's verdicts: down takes a backend out, up brings back what the agent took
    out (with slow start). What this access point's own checks took out stays out until
    its own probe brings it back. A backend that answered this access point's requests
    within the last ``TRUST_OWN_ANSWERS`` seconds is not taken out on the agent's word:
    a single-threaded server busy with requests (llama.cpp) answers probes late, and the
    agent does not see the requests that keep it busy; if it really is down, the next
    requests fail and this access point's own checks take it out."""
    for b in backends:
        verdict = health.get(b.name) if b.announced else None
        if verdict is False and not b.site_down:
            b.site_down = True
            if b.healthy and now - b.last_success > TRUST_OWN_ANSWERS:
                b.healthy = False
                b.down_since = b.out_since = now
        elif verdict is True and b.site_down:
            b.site_down = False
            if not b.healthy:
                b.healthy = True
                b.returned_at = now
