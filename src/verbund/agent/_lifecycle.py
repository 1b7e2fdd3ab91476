"""The site's own lifecycle at its agent: drain, maintenance, resume.

The site's operators (``[[operators]]``) decide these at their agent; access points may
pass on their federation admin's decision too (naming who asked). The state is kept in
the agent's store (it survives a restart), written to the agent's audit chain with the
actor, and announced in the catalogue, which carries it to every access point.
Credentials act on their own site only: naming another site is 403.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from verbund.agent._auth import Role, require
from verbund.audit import AuditLog
from verbund.config import SiteState
from verbund.errors import BadRequest, PermissionDenied
from verbund.store import SiteStateRow, Store

__all__ = ["SiteLifecycleAtAgent", "routes"]

log = logging.getLogger("verbund.agent")

ACTIONS = {
    "drain": SiteState.draining,
    "maintenance": SiteState.maintenance,
    "resume": SiteState.active,
}


class SiteLifecycleAtAgent:
    def __init__(
        self, site: str, initial: SiteState, store: Store, on_change: Callable[[], object]
    ) -> None:
        self.site = site
        self.state = initial
        self._store = store
        self._audit = AuditLog(store)
        self._on_change = on_change

    async def load(self) -> None:
        async with self._store.session() as s:
            row = await s.get(SiteStateRow, self.site)
        if row is not None:
            self.state = SiteState(row.state)

    async def set(self, state: SiteState, actor: str) -> SiteState:
        before = self.state
        async with self._store.session() as s, s.begin():
            row = await s.get(SiteStateRow, self.site)
            if row is None:
                s.add(
                    SiteStateRow(
                        site=self.site, state=state.value, updated_at=time.time(), actor=actor
                    )
                )
            else:
                row.state, row.updated_at, row.actor = state.value, time.time(), actor
            await self._audit.append(
                s,
                actor=actor,
                action=f"site.{state.value}",
                target=self.site,
                before={"state": before.value},
                after={"state": state.value},
            )
        self.state = state
        self._on_change()
        log.info("site %s: %s -> %s by %s", self.site, before.value, state.value, actor)
        return before


async def _actor(request: Request, role: Role, name: str) -> str:
    """The operator's own name; an access point's name with whom it acts for."""
    if role is Role.operator:
        return f"operator:{name}"
    body = await request.body()
    on_behalf = ""
    if body:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise BadRequest("The body must be JSON.") from None
        if not isinstance(data, dict) or not isinstance(data.get("actor", ""), str):
            raise BadRequest("'actor' must be a string.", param="actor")
        on_behalf = str(data.get("actor", ""))[:128]
    return f"access_point:{name}" + (f"/{on_behalf}" if on_behalf else "")


def _action(action: str) -> Callable[[Request], object]:
    async def endpoint(request: Request) -> Response:
        caller = require(request, Role.operator, Role.access_point)
        svc = request.app.state.services
        lifecycle: SiteLifecycleAtAgent = svc.lifecycle
        name = request.path_params["name"]
        if name != lifecycle.site:
            raise PermissionDenied(
                f"These credentials act on site '{lifecycle.site}' only, not on '{name}'."
            )
        actor = await _actor(request, caller.role, caller.name)
        state = ACTIONS[action]
        before = await lifecycle.set(state, actor)
        return JSONResponse(
            {"site": name, "state": state.value, "previous": before.value, "actor": actor}
        )

    return endpoint


async def get_site(request: Request) -> Response:
    require(request, Role.operator, Role.access_point)
    svc = request.app.state.services
    lifecycle: SiteLifecycleAtAgent = svc.lifecycle
    if request.path_params["name"] != lifecycle.site:
        raise PermissionDenied(f"These credentials act on site '{lifecycle.site}' only.")
    return JSONResponse({"site": lifecycle.site, "state": lifecycle.state.value})


def routes() -> list[BaseRoute]:
    out: list[BaseRoute] = [Route("/sites/{name}", get_site, methods=["GET"])]
    for action in ACTIONS:
        out.append(Route(f"/sites/{{name}}/{action}", _action(action), methods=["POST"]))
    return out
