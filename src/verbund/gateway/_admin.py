"""The federation admin API under /admin: sites, keys, institutions, usage, audit."""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from verbund.accounting import GROUPS, usage_report
from verbund.config import InstitutionConfig, SiteState
from verbund.errors import BadRequest, NotFound
from verbund.gateway._deps import admin, json_body, query_int, services, validated
from verbund.gateway._services import Services

ADMIN_BODY_LIMIT = 64 * 1024
log = logging.getLogger("verbund.gateway")


async def _admin(request: Request) -> tuple[Services, str]:
    actor = admin(request)
    return services(request), actor


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
        if detail:
            entry["backends"] = [
                {
                    "name": b.name,
                    "kind": b.kind,
                    "models": list(b.config.models),
                    "healthy": b.healthy,
                    "ejected": b.ejected_until > now,
                    "outstanding": b.outstanding,
                    "served": b.served,
                    "failures": b.failures,
                    "ttft_ewma_ms": None if b.ttft_ewma is None else round(b.ttft_ewma * 1000, 1),
                }
                for b in site.backends
            ]
        out.append(entry)
    return out


async def list_sites(request: Request) -> Response:
    svc, _ = await _admin(request)
    return JSONResponse(
        {
            "access_point": svc.config.gateway.name,
            "access_points": await svc.coordination.presence.live(),
            "sites": site_view(svc, detail=True),
        }
    )


def _lifecycle(state: SiteState) -> Any:
    async def handler(request: Request) -> Response:
        svc, actor = await _admin(request)
        name = request.path_params["name"]
        before = await svc.lifecycle.set_state(name, state, actor)
        return JSONResponse({"site": name, "state": state.value, "previous": before.value})

    return handler


drain_site = _lifecycle(SiteState.draining)
maintain_site = _lifecycle(SiteState.maintenance)
resume_site = _lifecycle(SiteState.active)


async def drain_access_point(request: Request) -> Response:
    """Take this access point out of service as SIGTERM would: ``/readyz`` 503 at once,
    serving on for ``gateway.drain_grace`` seconds, then stopping once what is in flight
    has finished. Audited like a site's lifecycle change."""
    svc, actor = await _admin(request)
    name = svc.config.gateway.name
    before = "draining" if svc.drain.draining else "serving"
    async with svc.store.session() as s, s.begin():
        await svc.audit.append(
            s,
            actor=actor,
            action="access_point.drain",
            target=name,
            before={"state": before},
            after={"state": "draining"},
        )
    svc.drain.request()
    log.info("access point %s: %s -> draining by %s", name, before, actor)
    return JSONResponse(
        {
            "access_point": name,
            "state": "draining",
            "previous": before,
            "grace_seconds": svc.drain.grace,
        },
        status_code=202,
    )


class _KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    institution: str = Field(min_length=1, max_length=128)
    name: str = Field("", max_length=256)


async def create_key(request: Request) -> Response:
    svc, actor = await _admin(request)
    req = validated(_KeyCreate, (await json_body(request, ADMIN_BODY_LIMIT))[1])
    if svc.institutions.get(req.institution) is None:
        raise NotFound(f"No institution '{req.institution}'.", param="institution")
    created = await svc.keys.create(req.institution, req.name, actor)
    return JSONResponse(
        {
            "id": created.id,
            "key": created.key,
            "institution": created.institution,
            "name": created.name,
            "created_at": created.created_at,
        },
        status_code=201,
    )


async def list_keys(request: Request) -> Response:
    svc, _ = await _admin(request)
    rows = await svc.keys.list(request.query_params.get("institution"))
    return JSONResponse(
        {
            "data": [
                {
                    "id": r.id,
                    "prefix": r.prefix,
                    "institution": r.institution_id,
                    "name": r.name,
                    "created_at": int(r.created_at),
                    "revoked": r.revoked_at is not None,
                }
                for r in rows
            ]
        }
    )


async def revoke_key(request: Request) -> Response:
    svc, actor = await _admin(request)
    key_id = request.path_params["key_id"]
    await svc.keys.revoke(key_id, actor)
    return JSONResponse({"id": key_id, "revoked": True})


class _KeyUpdate(BaseModel):
    """Quotas (both are set together, 0 = the institution's) and settings of a key;
    settings left out stay as they are."""

    model_config = ConfigDict(extra="forbid")
    requests_per_minute: int | None = Field(None, ge=0)
    tokens_per_minute: int | None = Field(None, ge=0)
    front_end: bool | None = None
    model_kinds: list[Literal["chat", "completion", "embedding", "oip"]] | None = None


async def update_key(request: Request) -> Response:
    svc, actor = await _admin(request)
    req = validated(_KeyUpdate, (await json_body(request, ADMIN_BODY_LIMIT))[1])
    key_id = request.path_params["key_id"]
    settings = req.model_dump(include={"front_end", "model_kinds"}, exclude_none=True)
    if settings:
        row = await svc.keys.set_settings(key_id, actor, **settings)
    if req.requests_per_minute is not None or req.tokens_per_minute is not None or not settings:
        row = await svc.keys.set_quotas(
            key_id, actor, req.requests_per_minute or 0, req.tokens_per_minute or 0
        )
    return JSONResponse(
        {
            "id": row.id,
            "requests_per_minute": row.requests_per_minute or 0,
            "tokens_per_minute": row.tokens_per_minute or 0,
            "front_end": bool(row.front_end),
            "model_kinds": row.model_kinds,
        }
    )


async def update_institution(request: Request) -> Response:
    svc, actor = await _admin(request)
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
    inst = await svc.institutions.update(request.path_params["institution_id"], changes, actor)
    return JSONResponse(inst.model_dump(mode="json"))


def _check_partner_site(svc: Services, site: object) -> None:
    if site is not None and not isinstance(site, str):
        raise BadRequest(
            "'partner_site' must be a site name.", code="invalid_type", param="partner_site"
        )
    if site and site not in svc.federation.sites:
        raise BadRequest(f"partner_site names an unknown site: {site}", param="partner_site")


async def list_institutions(request: Request) -> Response:
    svc, _ = await _admin(request)
    return JSONResponse({"data": [i.model_dump(mode="json") for i in svc.institutions.all()]})


async def create_institution(request: Request) -> Response:
    svc, actor = await _admin(request)
    inst = validated(InstitutionConfig, (await json_body(request, ADMIN_BODY_LIMIT))[1])
    unknown = [s for s in inst.allowed_sites if s not in svc.federation.sites]
    if unknown:
        raise BadRequest(
            f"allowed_sites names unknown sites: {', '.join(unknown)}", param="allowed_sites"
        )
    _check_partner_site(svc, inst.partner_site)
    await svc.institutions.create(inst, actor)
    return JSONResponse(inst.model_dump(mode="json"), status_code=201)


def _float_param(request: Request, name: str) -> float | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):  # nan and inf parse as floats but name no time
        raise BadRequest(f"'{name}' must be a Unix time in seconds.", param=name)
    return value


async def usage(request: Request) -> Response:
    svc, _ = await _admin(request)
    group_by = [g for g in request.query_params.get("group_by", "institution").split(",") if g]
    unknown = [g for g in group_by if g not in GROUPS]
    if unknown:
        raise BadRequest(
            f"Unknown group_by {unknown}; choose from {', '.join(GROUPS)}.", param="group_by"
        )
    await svc.accounting.spool.flush()
    rows = await usage_report(
        svc.store,
        group_by,
        _float_param(request, "since"),
        _float_param(request, "until"),
        request.query_params.get("institution") or None,
    )
    return JSONResponse({"group_by": group_by, "data": rows})


async def audit_entries(request: Request) -> Response:
    svc, _ = await _admin(request)
    after = query_int(request, "after", 0, 0, 2**62)  # a sequence number, not a time
    rows = await svc.audit.entries(after_seq=after)
    return JSONResponse(
        {
            "data": [
                {
                    "seq": r.seq,
                    "ts": r.ts,
                    "actor": r.actor,
                    "action": r.action,
                    "target": r.target,
                    "before": r.before,
                    "after": r.after,
                    "prev_hash": r.prev_hash,
                    "hash": r.hash,
                }
                for r in rows
            ]
        }
    )


async def audit_verify(request: Request) -> Response:
    svc, _ = await _admin(request)
    result = await svc.audit.verify()
    return JSONResponse(
        {
            "ok": result.ok,
            "entries": result.entries,
            "first_broken": result.first_broken,
            "reason": result.reason,
        }
    )
