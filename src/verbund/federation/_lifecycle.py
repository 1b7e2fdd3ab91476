"""Site lifecycle: drain, maintenance and resume, shared by every access point.

The state of each site is a row in the store (the truth after a restart), an entry in
the audit chain (who changed it, from what), an event on the coordination bus (so other
access points follow within moments) and the in-memory :class:`Site` the router reads.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import select

from verbund.audit import AuditLog, Who, who_name
from verbund.config import SiteState
from verbund.errors import NotFound
from verbund.federation._federation import Federation
from verbund.store import SiteStateRow, Store

__all__ = ["SiteLifecycle"]

log = logging.getLogger("verbund.federation")

Publish = Callable[[dict[str, Any]], Awaitable[None]]


class SiteLifecycle:
    def __init__(
        self, federation: Federation, store: Store, audit: AuditLog, publish: Publish
    ) -> None:
        self._federation = federation
        self._store = store
        self._audit = audit
        self._publish = publish

    async def load(self) -> None:
        """The states in the store (set by any access point) become this one's."""
        async with self._store.session() as s:
            rows = (await s.execute(select(SiteStateRow))).scalars().all()
        for row in rows:
            if row.site in self._federation.sites:
                self._federation.set_state(row.site, SiteState(row.state))

    async def on_event(self, event: dict[str, Any]) -> None:
        """Another access point changed a site's state."""
        if event.get("type") != "site.state":
            return
        site, state = event.get("site"), event.get("state")
        if site in self._federation.sites and state in SiteState.__members__:
            self._federation.set_state(str(site), SiteState(str(state)))

    async def set_state(self, site: str, state: SiteState, actor: Who) -> SiteState:
        """Change a site's state everywhere; returns the state it had before."""
        if site not in self._federation.sites:
            raise NotFound(f"No site named '{site}'.", param="site")
        name = who_name(actor)[0]
        async with self._store.session() as s, s.begin():
            row = await s.get(SiteStateRow, site)
            before = SiteState(row.state) if row else self._federation.sites[site].state
            if row is None:
                s.add(
                    SiteStateRow(site=site, state=state.value, updated_at=time.time(), actor=name)
                )
            else:
                row.state, row.updated_at, row.actor = state.value, time.time(), name
            await self._audit.append(
                s,
                actor=actor,
                action=f"site.{state.value}",
                target=site,
                before={"state": before.value},
                after={"state": state.value},
            )
        self._federation.set_state(site, state)
        await self._publish({"type": "site.state", "site": site, "state": state.value})
        log.info("site %s: %s -> %s by %s", site, before.value, state.value, name)
        return before
