"""A signed-in person's own things: who they are, their keys, their usage.

What the console's "my keys" and "my usage" pages call. Only sessions of people reach
these routes (an admin key is not a person); every change carries the session's CSRF
token (checked where the actor is resolved). A key is shown once, when it is made.
"""

from __future__ import annotations

import time

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from verbund.accounting import GROUPS, usage_report
from verbund.config import DataClass
from verbund.errors import BadRequest, PermissionDenied
from verbund.gateway._deps import actor, authorize, json_body, query_time, services, validated
from verbund.store import ApiKeyRow
from verbund.tenancy import Actor, Permission

ME_BODY_LIMIT = 16 * 1024
MAX_KEY_DAYS = 366


async def person(request: Request) -> Actor:
    """The signed-in person (403 for admin keys), once they may have keys of their
    institution's."""
    who = await actor(request)
    if who.kind != "person":
        raise PermissionDenied(
            "These routes are for signed-in people; admin keys use /admin.", code="not_a_person"
        )
    authorize(who, Permission.own_keys, who.institution)
    return who


def _key_view(r: ApiKeyRow) -> dict[str, object]:
    return {
        "id": r.id,
        "object": "api_key",
        "name": r.name,
        "prefix": r.prefix,
        "institution": r.institution_id,
        "data_class": r.data_class,
        "created_at": int(r.created_at),
        "expires_at": None if r.expires_at is None else int(r.expires_at),
        "revoked": r.revoked_at is not None,
    }


async def me(request: Request) -> Response:
    who = await actor(request)
    svc = services(request)
    row = await svc.identity.people.get(who.id) if who.kind == "person" else None
    return JSONResponse(
        {
            "id": who.id,
            "kind": who.kind,
            "role": who.role.value,
            "institution": who.institution,
            "site": who.site,
            "display_name": row.display_name if row else "",
            "requests_per_minute": row.requests_per_minute if row else 0,
            "tokens_per_minute": row.tokens_per_minute if row else 0,
        },
        headers={"cache-control": "no-store"},
    )


class _NewKey(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=128)
    expires_at: int | None = Field(None, ge=0)  # Unix seconds; None = until revoked
    data_class: DataClass | None = None  # at most the institution's default


async def list_keys(request: Request) -> Response:
    who = await person(request)
    rows = await services(request).keys.list(who.institution, person_id=who.id)
    return JSONResponse(
        {"object": "list", "data": [_key_view(r) for r in rows]},
        headers={"cache-control": "no-store"},
    )


async def create_key(request: Request) -> Response:
    who = await person(request)
    svc = services(request)
    req = validated(_NewKey, (await json_body(request, ME_BODY_LIMIT))[1])
    assert who.institution is not None  # person() checked it
    inst = svc.institutions.get(who.institution)
    if inst is None:
        raise PermissionDenied("Your institution is no longer a member.")
    now = time.time()
    if req.expires_at is not None and not now < req.expires_at <= now + MAX_KEY_DAYS * 86400:
        raise BadRequest(
            f"expires_at must be in the future and within {MAX_KEY_DAYS} days.",
            param="expires_at",
        )
    if req.data_class is not None and req.data_class.rank > inst.default_data_class.rank:
        raise BadRequest(
            f"data_class may be at most your institution's ({inst.default_data_class.value}).",
            param="data_class",
        )
    created = await svc.keys.create(
        who.institution,
        req.name,
        who,
        person_id=who.id,
        expires_at=None if req.expires_at is None else float(req.expires_at),
        data_class=None if req.data_class is None else req.data_class.value,
    )
    return JSONResponse(
        {
            "id": created.id,
            "object": "api_key",
            "key": created.key,
            "name": created.name,
            "institution": created.institution,
            "data_class": req.data_class.value if req.data_class else None,
            "created_at": created.created_at,
            "expires_at": req.expires_at,
        },
        status_code=201,
        headers={"cache-control": "no-store"},
    )


async def revoke_key(request: Request) -> Response:
    who = await person(request)
    key_id = request.path_params["key_id"]
    await services(request).keys.revoke(key_id, who, who.institution, person_id=who.id)
    return JSONResponse({"id": key_id, "object": "api_key", "revoked": True})


async def usage(request: Request) -> Response:
    """The person's usage, grouped by ``group_by`` (default ``day,model``)."""
    who = await person(request)
    svc = services(request)
    group_by = [g for g in request.query_params.get("group_by", "day,model").split(",") if g]
    allowed = [g for g in GROUPS if g not in ("institution", "person", "access_point")]
    unknown = [g for g in group_by if g not in allowed]
    if unknown:
        raise BadRequest(
            f"Unknown group_by {unknown}; choose from {', '.join(allowed)}.", param="group_by"
        )
    since = query_time(request, "since")
    await svc.accounting.spool.flush()
    rows = await usage_report(svc.store, group_by, since, None, who.institution, person_id=who.id)
    return JSONResponse({"group_by": group_by, "since": since, "data": rows})
