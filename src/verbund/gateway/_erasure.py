"""``POST /admin/erasure``: erase everything of one key or one person (verbund.erasure)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from verbund.errors import BadRequest
from verbund.gateway._deps import actor, authorize, json_body, services
from verbund.tenancy import Permission


async def erase(request: Request) -> Response:
    """Body ``{"key_id": ...}`` or ``{"person_id": ...}``. Allowed to whoever may manage
    the keys of the subject's institution (its institution admin, a federation admin)."""
    who = await actor(request)
    svc = services(request)
    _, body = await json_body(request, 4096)
    key_id, person_id = body.get("key_id") or "", body.get("person_id") or ""
    if (
        not isinstance(key_id, str)
        or not isinstance(person_id, str)
        or bool(key_id) == bool(person_id)
    ):
        raise BadRequest("Give exactly one of 'key_id' or 'person_id'.", param="key_id")
    institution, _ = await svc.erasure.subject_keys(key_id=key_id, person_id=person_id)
    authorize(who, Permission.keys_write, institution)
    report = await svc.erasure.erase(who, key_id=key_id, person_id=person_id)
    return JSONResponse(report.to_json())
