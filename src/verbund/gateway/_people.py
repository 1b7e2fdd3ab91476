"""People of an institution, for its admin: who signed in, with which role, and the
per-person quotas that hold within the institution's own."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from verbund.gateway._deps import (
    actor,
    authorize,
    json_body,
    query_param,
    require,
    services,
    validated,
)
from verbund.store import PersonRow
from verbund.tenancy import Permission, PersonQuota, Role

_read_people = require(Permission.people_read, query_param("institution"))


def _view(r: PersonRow) -> dict[str, object]:
    return {
        "id": r.id,
        "institution": r.institution_id,
        "role": r.role,
        "site": r.site,
        "display_name": r.display_name,
        "created_at": int(r.created_at),
        "last_login_at": int(r.last_login_at),
        "requests_per_minute": r.requests_per_minute,
        "tokens_per_minute": r.tokens_per_minute,
    }


async def list_people(request: Request) -> Response:
    await _read_people(request)
    rows = await services(request).identity.people.list(
        request.query_params.get("institution") or None
    )
    return JSONResponse({"data": [_view(r) for r in rows]})


class _Quota(BaseModel):
    model_config = ConfigDict(extra="forbid")
    requests_per_minute: int = Field(0, ge=0)
    tokens_per_minute: int = Field(0, ge=0)


async def update_person(request: Request) -> Response:
    who = await actor(request)
    svc = services(request)
    person = await svc.identity.people.get(request.path_params["person_id"])
    authorize(who, Permission.people_write, person.institution_id if person else None)
    req = validated(_Quota, (await json_body(request, 16 * 1024))[1])
    row = await svc.identity.people.set_quota(
        request.path_params["person_id"],
        None if who.role is Role.federation_admin else who.institution,
        PersonQuota(req.requests_per_minute, req.tokens_per_minute),
        who,
    )
    return JSONResponse(_view(row))
