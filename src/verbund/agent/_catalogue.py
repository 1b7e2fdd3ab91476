"""The site's catalogue as the agent announces it: ``GET /catalogue``.

The document (:class:`verbund.federation.SiteCatalogue`, the one wire format) holds the
site's facts and lifecycle state, its models with kind, licence, context length and data
classes, its backends with capacity and the agent's health verdict, and its price list.
It is rebuilt whenever any of these may have changed and whenever a probe round ends;
its ETag is a hash of its bytes, so an unchanged site answers a conditional request with
304 and an access point long-polling with ``?wait=`` is woken only by real changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from verbund.agent._auth import Role, require
from verbund.agent._offer import Offer
from verbund.agent._ondemand import OnDemand
from verbund.config import DataClass, SiteState
from verbund.errors import BadRequest
from verbund.federation import (
    CATALOGUE_PATH,
    AnnouncedBackend,
    AnnouncedModel,
    AnnouncedSite,
    SiteCatalogue,
)

__all__ = ["Catalogue", "build_catalogue", "routes"]


def build_catalogue(
    offer: Offer, state: SiteState, on_demand: OnDemand | None = None, signing_key: str = ""
) -> SiteCatalogue:
    """The document; on-demand models carry their ``status`` and their ready instances
    are announced as backends (healthy: the agent saw the engine answer)."""
    cfg = offer.config
    od = on_demand.models if on_demand is not None else {}
    max_class = cfg.site.max_data_class
    up_to_max = [d for d in DataClass if d.rank <= max_class.rank]
    return SiteCatalogue(
        site=AnnouncedSite(
            name=cfg.site.name,
            region=cfg.site.region,
            jurisdiction=cfg.site.jurisdiction,
            max_data_class=max_class,
            certifications=cfg.site.certifications,
            state=state,
            signing_key=signing_key,
        ),
        models=[
            AnnouncedModel(
                **m.model_dump(exclude={"data_classes"}),
                data_classes=m.data_classes or up_to_max,
                on_demand=m.name in od,
                status=on_demand.status(m.name) if on_demand and m.name in od else "",
                expected_start_seconds=(
                    round(on_demand.expected_start(m.name), 1)
                    if on_demand and m.name in od
                    else None
                ),
            )
            for m in cfg.models
        ],
        backends=[
            AnnouncedBackend(**b.config.model_dump(exclude={"launch"}), healthy=offer.health(b))
            for b in offer.backends.values()
        ]
        + [
            AnnouncedBackend(name=i.backend, url=i.endpoint or "", models=[i.model], healthy=True)
            for i in (on_demand.ready() if on_demand is not None else [])
        ],
        prices=cfg.prices,
    )


class Catalogue:
    """The current document, its ETag, and a way to wait for the next one."""

    def __init__(self) -> None:
        self.body = b""
        self.etag = ""
        self._changed = asyncio.Event()
        self.closing = False
        self.waiting = 0  # long-polls held now: the access points following this site

    def release(self) -> None:
        """The agent is stopping: every long-poll is answered now (and later ones at
        once), so held requests do not delay the shutdown."""
        self.closing = True
        self._changed.set()
        self._changed = asyncio.Event()

    def update(self, catalogue: SiteCatalogue) -> bool:
        """Take a freshly built catalogue; True (and waiters woken) if it differs."""
        body = orjson.dumps(catalogue.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        if etag == self.etag:
            return False
        self.body, self.etag = body, etag
        self._changed.set()
        self._changed = asyncio.Event()
        return True

    async def wait_change(self, etag: str, within: float) -> None:
        """Until the ETag differs from ``etag``, at most ``within`` seconds."""
        if etag != self.etag or self.closing:
            return
        changed = self._changed
        self.waiting += 1
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), within)
        finally:
            self.waiting -= 1


def _wait_param(request: Request, most: float) -> float:
    raw = request.query_params.get("wait", "0")
    try:
        wait = float(raw)
    except ValueError:
        wait = -1.0
    if not math.isfinite(wait) or wait < 0:
        raise BadRequest("'wait' must be a number of seconds, 0 or more.", param="wait")
    return min(wait, most)


async def get_catalogue(request: Request) -> Response:
    require(request, Role.access_point, Role.operator)
    svc = request.app.state.services
    catalogue: Catalogue = svc.catalogue
    wait = _wait_param(request, svc.config.agent.max_wait_seconds)
    seen = request.headers.get("if-none-match", "")
    if seen and wait > 0:
        await catalogue.wait_change(seen, wait)
    headers = {"etag": catalogue.etag, "cache-control": "no-cache"}
    if seen == catalogue.etag:
        return Response(status_code=304, headers=headers)
    return Response(catalogue.body, media_type="application/json", headers=headers)


def routes() -> list[BaseRoute]:
    return [Route(CATALOGUE_PATH, get_catalogue, methods=["GET"])]
