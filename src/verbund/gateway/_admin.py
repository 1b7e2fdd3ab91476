"""The federation admin API under /admin: sites, institutions, usage, audit (keys: _keys).

Every route names its permission once, through :func:`require` (or, where the target is
in the body, :func:`authorize`); what each role may do is decided in
:mod:`verbund.tenancy` alone."""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from verbund.accounting import GROUPS, node_time_report, usage_report
from verbund.config import InstitutionConfig, SiteState
from verbund.errors import ApiError, BadRequest, NotFound
from verbund.gateway._deps import (
    json_body,
    path_param,
    query_int,
    query_param,
    query_time,
    require,
    services,
    validated,
)
from verbund.gateway._services import Services
from verbund.store import AuditRow
from verbund.tenancy import Permission

ADMIN_BODY_LIMIT = 64 * 1024
log = logging.getLogger("verbund.gateway")


_read_sites = require(Permission.sites_read)
_read_site = require(Permission.sites_read, path_param("name"))
_change_site = require(Permission.site_lifecycle, path_param("name"))
_drain_access_point = require(Permission.access_point_drain)
_read_institutions = require(Permission.institutions_read, query_param("institution"))
_change_institution = require(Permission.institutions_write, path_param("institution_id"))
_create_institution = require(Permission.institutions_write)
_read_usage = require(Permission.usage_read, query_param("institution"))
_read_audit = require(Permission.audit_read)


def site_view(svc: Services, *, detail: bool) -> list[dict[str, Any]]:
    now = time.monotonic()
    out = []
    for site in svc.federation:
        entry: dict[str, Any] = {
            "name": site.name,
            "region": site.region,
            "jurisdiction": site.jurisdiction,
            "max_data_class": site.max_data_class.value,
            "certifications": list(site.config.certifications),
            "state": site.state.value,
            "healthy": any(b.available(now) for b in site.backends),
            "models": sorted({m for b in site.backends for m in b.config.models}),
        }
        sync = svc.health.catalogues.sites.get(site.name)
        if sync is not None:  # the site's agent announces it: how current that picture is
            entry["catalogue"] = sync.view()
        if detail:
            entry["backends"] = [
                {
                    "name": b.name,
                    "kind": b.kind,
                    "url": b.url,
                    "announced": b.announced,  # by the site's agent (health from there)
                    "models": list(b.config.models),
                    "healthy": b.healthy,
                    "ejected": b.ejected_until > now,
                    "outstanding": b.outstanding,
                    # running + waiting as the engine reports it (scraped here, or by the
                    # site's agent for announced backends); None when no fresh reading
                    "engine_load": (
                        b.engine.running + b.engine.waiting
                        if now - b.engine.scraped_at < svc.config.routing.metrics_stale_after
                        else None
                    ),
                    "served": b.served,
                    "failures": b.failures,
                    "ttft_ewma_ms": None if b.ttft_ewma is None else round(b.ttft_ewma * 1000, 1),
                }
                for b in site.backends
            ]
        out.append(entry)
    return out


async def list_sites(request: Request) -> Response:
    await _read_sites(request)
    svc = services(request)
    return JSONResponse(
        {
            "access_point": svc.config.gateway.name,
            "access_points": await svc.coordination.presence.live(),
            "sites": site_view(svc, detail=True),
        }
    )


async def get_site(request: Request) -> Response:
    """One site with its backends' live load: what its operator watches."""
    await _read_site(request)
    name = request.path_params["name"]
    found = [s for s in site_view(services(request), detail=True) if s["name"] == name]
    if not found:
        raise NotFound(f"No site named '{name}'.", param="site")
    return JSONResponse(found[0])


def _lifecycle(state: SiteState) -> Any:
    async def handler(request: Request) -> Response:
        who = await _change_site(request)
        svc = services(request)
        name = request.path_params["name"]
        before = await svc.lifecycle.set_state(name, state, who)
        answer = {"site": name, "state": state.value, "previous": before.value}
        agent = svc.health.catalogues.agents.get(name)
        if agent is not None:  # the site's own state too, so its agent and every AP agree
            try:  # the agent's audit chain names this access point and who asked here
                await agent.set_state(state.value, who.audit_name)
                answer["agent"] = "applied"
            except ApiError as exc:
                log.warning("site %s: agent not told of %s: %s", name, state.value, exc.message)
                answer["agent"] = "unreachable"
        return JSONResponse(answer)

    return handler


drain_site = _lifecycle(SiteState.draining)
maintain_site = _lifecycle(SiteState.maintenance)
resume_site = _lifecycle(SiteState.active)


async def drain_access_point(request: Request) -> Response:
    """Take this access point out of service as SIGTERM would: ``/readyz`` 503 at once,
    serving on for ``gateway.drain_grace`` seconds, then stopping once what is in flight
    has finished. Audited like a site's lifecycle change."""
    who = await _drain_access_point(request)
    svc = services(request)
    name = svc.config.gateway.name
    before = "draining" if svc.drain.draining else "serving"
    async with svc.store.session() as s, s.begin():
        await svc.audit.append(
            s,
            actor=who,
            action="access_point.drain",
            target=name,
            before={"state": before},
            after={"state": "draining"},
        )
    svc.drain.request()
    log.info("access point %s: %s -> draining by %s", name, before, who.id)
    return JSONResponse(
        {
            "access_point": name,
            "state": "draining",
            "previous": before,
            "grace_seconds": svc.drain.grace,
        },
        status_code=202,
    )


async def update_institution(request: Request) -> Response:
    who = await _change_institution(request)
    svc = services(request)
    changes = (await json_body(request, ADMIN_BODY_LIMIT))[1]
    sites = changes.get("allowed_sites", [])
    if not isinstance(sites, list) or not all(isinstance(s, str) for s in sites):
        raise BadRequest(
            "'allowed_sites' must be an array of site names.",
            code="invalid_type",
            param="allowed_sites",
        )
    unknown = [s for s in sites if s not in svc.federation.sites]
    if unknown:
        raise BadRequest(
            f"allowed_sites names unknown sites: {', '.join(map(str, unknown))}",
            param="allowed_sites",
        )
    _check_partner_site(svc, changes.get("partner_site"))
    inst = await svc.institutions.update(request.path_params["institution_id"], changes, who)
    return JSONResponse(inst.model_dump(mode="json"))


def _check_partner_site(svc: Services, site: object) -> None:
    if site is not None and not isinstance(site, str):
        raise BadRequest(
            "'partner_site' must be a site name.", code="invalid_type", param="partner_site"
        )
    if site and site not in svc.federation.sites:
        raise BadRequest(f"partner_site names an unknown site: {site}", param="partner_site")


async def list_institutions(request: Request) -> Response:
    await _read_institutions(request)
    svc = services(request)
    only = request.query_params.get("institution") or None
    return JSONResponse(
        {
            "data": [
                i.model_dump(mode="json")
                for i in svc.institutions.all()
                if only is None or i.id == only
            ]
        }
    )


async def create_institution(request: Request) -> Response:
    who = await _create_institution(request)
    svc = services(request)
    inst = validated(InstitutionConfig, (await json_body(request, ADMIN_BODY_LIMIT))[1])
    unknown = [s for s in inst.allowed_sites if s not in svc.federation.sites]
    if unknown:
        raise BadRequest(
            f"allowed_sites names unknown sites: {', '.join(unknown)}", param="allowed_sites"
        )
    _check_partner_site(svc, inst.partner_site)
    await svc.institutions.create(inst, who)
    return JSONResponse(inst.model_dump(mode="json"), status_code=201)


async def usage(request: Request) -> Response:
    await _read_usage(request)
    svc = services(request)
    group_by = [g for g in request.query_params.get("group_by", "institution").split(",") if g]
    unknown = [g for g in group_by if g not in GROUPS]
    if unknown:
        raise BadRequest(
            f"Unknown group_by {unknown}; choose from {', '.join(GROUPS)}.", param="group_by"
        )
    await svc.accounting.spool.flush()
    since, until = query_time(request, "since"), query_time(request, "until")
    institution = request.query_params.get("institution") or None
    rows = await usage_report(svc.store, group_by, since, until, institution)
    out: dict[str, Any] = {"group_by": group_by, "data": rows}
    if institution is None:  # the sites' cost of serving on demand: not an institution's
        out["node_time"] = await node_time_report(svc.store, since, until)
    return JSONResponse(out)


def audit_entry(r: AuditRow) -> dict[str, Any]:
    """An audit entry as ``GET /admin/audit`` and the console's export give it: the
    fields ``verbund audit verify --file`` checks."""
    return {
        "seq": r.seq,
        "ts": r.ts,
        "actor": r.actor,
        "role": r.role or None,
        "action": r.action,
        "target": r.target,
        "before": r.before,
        "after": r.after,
        "prev_hash": r.prev_hash,
        "hash": r.hash,
    }


async def audit_entries(request: Request) -> Response:
    await _read_audit(request)
    svc = services(request)
    after = query_int(request, "after", 0, 0, 2**62)  # a sequence number, not a time
    rows = await svc.audit.entries(after_seq=after)
    return JSONResponse({"data": [audit_entry(r) for r in rows]})


async def audit_verify(request: Request) -> Response:
    await _read_audit(request)
    svc = services(request)
    result = await svc.audit.verify()
    return JSONResponse(
        {
            "ok": result.ok,
            "entries": result.entries,
            "first_broken": result.first_broken,
            "reason": result.reason,
        }
    )
