"""A site operator's page: the site's state with drain, maintenance and resume (forms with
a CSRF token), the live load of each backend (refreshed by the page's script), and the
node time its on-demand models held in the last 30 days (what serving cost the site)."""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from verbund.accounting import node_time_report
from verbund.config import SiteState
from verbund.console._access import Access, signed_in
from verbund.console._charts import bar_chart
from verbund.console._federation import state_class
from verbund.console._page import Console, svg
from verbund.errors import NotFound
from verbund.federation import Site
from verbund.gateway._deps import services
from verbund.tenancy import Permission, can

__all__ = ["site_action", "site_load", "site_page"]

ACTIONS = {
    "drain": SiteState.draining,
    "maintenance": SiteState.maintenance,
    "resume": SiteState.active,
}
NODE_TIME_DAYS = 30
BUTTONS = [
    ("drain", "Drain", ""),
    ("maintenance", "Maintenance", "danger"),
    ("resume", "Resume", "primary"),
]


def _sites_for(who: Access, request: Request) -> list[str]:
    """The sites the actor runs: its own (a site operator) or all (a federation admin)."""
    sites = services(request).federation.sites
    return [n for n in sites if can(who.actor, Permission.site_lifecycle, n)]


def _site(who: Access, request: Request, name: str) -> Site:
    svc = services(request)
    site = svc.federation.sites.get(name)
    if site is None:
        raise NotFound(f"No site '{name}'.", param="site")
    who.need(Permission.site_lifecycle, name)
    return site


def backend_rows(site: Site, now: float) -> list[dict[str, Any]]:
    rows = []
    for b in site.backends:
        ejected = b.ejected_until > now
        health = "ejected" if ejected else ("healthy" if b.healthy else "down")
        rows.append(
            {
                "name": b.name,
                "kind": b.kind,
                "models": list(b.config.models),
                "health": health,
                "health_class": {"healthy": "ok", "ejected": "warn"}.get(health, "bad"),
                "outstanding": b.outstanding,
                "capacity": b.config.max_concurrency,
                "served": b.served,
                "failures": b.failures,
                "ttft": "—" if b.ttft_ewma is None else f"{b.ttft_ewma * 1000:.0f} ms",
            }
        )
    return rows


async def _render(c: Console, request: Request, who: Access, site: Site, done: str) -> Response:
    svc = services(request)
    rows = backend_rows(site, time.monotonic())
    a24 = (await svc.accounting.availability.last_24h()).get(site.name)
    node_time = [
        r
        for r in await node_time_report(svc.store, time.time() - NODE_TIME_DAYS * 86400)
        if r["site"] == site.name
    ]
    chart = bar_chart(
        f"Requests in flight per backend ({site.name}), when the page loaded",
        [(r["name"], float(r["outstanding"])) for r in rows],
        value_label="requests in flight now",
    )
    return c.render(
        request,
        "site.html",
        title=f"Site {site.name}",
        viewer=who.viewer,
        csrf=who.csrf,
        site={
            "name": site.name,
            "region": site.region,
            "jurisdiction": site.jurisdiction,
            "max_data_class": site.max_data_class.value,
            "state": site.state.value,
            "state_class": state_class(site.state.value),
            "healthy": any(b.available(time.monotonic()) for b in site.backends),
            "a24": "no data" if a24 is None else f"{a24:.2%}",
        },
        sites=_sites_for(who, request),
        actions=BUTTONS,
        states={k: v.value for k, v in ACTIONS.items()},
        backends=rows,
        node_time=node_time,
        node_time_days=NODE_TIME_DAYS,
        chart=svg(chart),
        done=done,
    )


async def site_page(c: Console, request: Request) -> Response:
    who = await signed_in(request, Permission.site_lifecycle, "site")
    choices = _sites_for(who, request)
    name = request.query_params.get("site") or (choices[0] if choices else "")
    return await _render(c, request, who, _site(who, request, name), "")


async def site_action(c: Console, request: Request) -> Response:
    """POST drain / maintenance / resume: the same lifecycle call as the admin API, in the
    person's name, after the CSRF check and the same permission check."""
    who = await signed_in(request, Permission.site_lifecycle, "site")
    await who.form(request)
    action = request.path_params["action"]
    state = ACTIONS.get(action)
    if state is None:
        raise NotFound(f"No site action '{action}'.")
    site = _site(who, request, request.path_params["name"])
    before = await services(request).lifecycle.set_state(site.name, state, who.actor)
    done = f"{site.name}: {before.value} → {state.value}."
    return await _render(c, request, who, site, done)


async def site_load(c: Console, request: Request) -> Response:
    """The live load table's data, polled by the page every two seconds."""
    who = await signed_in(request, Permission.site_lifecycle, "site")
    site = _site(who, request, request.path_params["name"])
    return JSONResponse(
        {
            "site": site.name,
            "state": site.state.value,
            "backends": backend_rows(site, time.monotonic()),
        }
    )
