"""Keys through the admin API: an institution's API keys (for inference) and role-scoped
admin keys (a site operator's, an institution admin's, an auditor's). Who may make or
change which is decided by the role model; see :mod:`verbund.tenancy`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from verbund.errors import BadRequest, NotFound
from verbund.gateway._deps import (
    actor,
    authorize,
    json_body,
    query_param,
    require,
    services,
    validated,
)
from verbund.gateway._services import Services
from verbund.identity import ADMIN_KEY_ID_PREFIX
from verbund.tenancy import Actor, Permission, Role

KEY_BODY_LIMIT = 64 * 1024
_read_keys = require(Permission.keys_read, query_param("institution"))


class _KeyCreate(BaseModel):
    """An institution's key (``institution``), or with ``role`` a role-scoped admin key:
    ``site`` for a site_operator, ``institution`` for an institution_admin."""

    model_config = ConfigDict(extra="forbid")
    institution: str | None = Field(None, min_length=1, max_length=128)
    name: str = Field("", max_length=256)
    role: Role | None = None
    site: str | None = Field(None, min_length=1, max_length=128)


async def create_key(request: Request) -> Response:
    who = await actor(request)
    svc = services(request)
    req = validated(_KeyCreate, (await json_body(request, KEY_BODY_LIMIT))[1])
    if req.role is not None and req.role is not Role.member:
        authorize(who, Permission.admin_keys_write)
        return await _create_admin_key(svc, req, req.role, who)
    if req.institution is None:
        raise BadRequest("'institution' is required.", code="missing_field", param="institution")
    authorize(who, Permission.keys_write, req.institution)
    if svc.institutions.get(req.institution) is None:
        raise NotFound(f"No institution '{req.institution}'.", param="institution")
    created = await svc.keys.create(req.institution, req.name, who)
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


async def _create_admin_key(svc: Services, req: _KeyCreate, role: Role, who: Actor) -> Response:
    site = req.site if role is Role.site_operator else None
    institution = req.institution if role is Role.institution_admin else None
    if role is Role.site_operator and (site is None or site not in svc.federation.sites):
        raise BadRequest("A site_operator key needs the 'site' it operates.", param="site")
    if role is Role.institution_admin and (
        institution is None or svc.institutions.get(institution) is None
    ):
        raise BadRequest(
            "An institution_admin key needs a member 'institution'.", param="institution"
        )
    created = await svc.identity.admin_keys.create(
        role, institution=institution, site=site, name=req.name, actor=who
    )
    return JSONResponse(
        {
            "id": created.id,
            "key": created.key,
            "role": created.role.value,
            "institution": created.institution,
            "site": created.site,
            "name": created.name,
            "created_at": created.created_at,
        },
        status_code=201,
    )


async def list_keys(request: Request) -> Response:
    who = await _read_keys(request)
    svc = services(request)
    if request.query_params.get("kind") == "admin":
        authorize(who, Permission.admin_keys_write)
        return JSONResponse(
            {
                "data": [
                    {
                        "id": r.id,
                        "prefix": r.prefix,
                        "role": r.role,
                        "institution": r.institution_id,
                        "site": r.site,
                        "name": r.name,
                        "created_at": int(r.created_at),
                        "revoked": r.revoked_at is not None,
                    }
                    for r in await svc.identity.admin_keys.list()
                ]
            }
        )
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
                    "expires_at": None if r.expires_at is None else int(r.expires_at),
                    "person": r.person_id,
                    "revoked": r.revoked_at is not None,
                }
                for r in rows
            ]
        }
    )


async def _key_writer(request: Request) -> tuple[Services, Actor, str, str | None]:
    """The actor, once it may change the key in the path (its institution's, for an
    institution admin); ``None`` as the institution for a federation-wide actor."""
    who = await actor(request)
    svc = services(request)
    key_id = request.path_params["key_id"]
    entry = svc.keys.by_id(key_id)
    authorize(who, Permission.keys_write, entry.institution_id if entry else None)
    return svc, who, key_id, None if who.role is Role.federation_admin else who.institution


async def revoke_key(request: Request) -> Response:
    key_id = request.path_params["key_id"]
    if key_id.startswith(ADMIN_KEY_ID_PREFIX):
        who = await actor(request)
        authorize(who, Permission.admin_keys_write)
        await services(request).identity.admin_keys.revoke(key_id, who)
        return JSONResponse({"id": key_id, "revoked": True})
    svc, who, key_id, institution = await _key_writer(request)
    await svc.keys.revoke(key_id, who, institution)
    return JSONResponse({"id": key_id, "revoked": True})


class _KeyUpdate(BaseModel):
    """Quotas (both are set together, 0 = the institution's) and settings of a key;
    settings left out stay as they are."""

    model_config = ConfigDict(extra="forbid")
    requests_per_minute: int | None = Field(None, ge=0)
    tokens_per_minute: int | None = Field(None, ge=0)
    # a front-end's key (Open WebUI): its forwarded user headers name the person
    front_end: bool | None = None
    # what GET /v1/models lists for the key (e.g. ["chat"] for a chat front-end)
    model_kinds: list[Literal["chat", "completion", "embedding", "oip"]] | None = None


async def update_key(request: Request) -> Response:
    svc, who, key_id, institution = await _key_writer(request)
    req = validated(_KeyUpdate, (await json_body(request, KEY_BODY_LIMIT))[1])
    settings = req.model_dump(include={"front_end", "model_kinds"}, exclude_none=True)
    quotas = req.requests_per_minute is not None or req.tokens_per_minute is not None
    if settings:
        row = await svc.keys.set_settings(key_id, who, institution, **settings)
    if quotas or not settings:
        row = await svc.keys.set_quotas(
            key_id, who, req.requests_per_minute or 0, req.tokens_per_minute or 0
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
