"""The Files API routes: upload, list, get, download, delete; scoped to the caller's institution."""

from __future__ import annotations

import time
from typing import Literal
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from verbund.errors import BadRequest
from verbund.files import UPLOAD_PURPOSES, file_expiry
from verbund.gateway._deps import principal, query_int, services
from verbund.gateway._upload import receive_upload

EXPIRES_MIN, EXPIRES_MAX = 3600, 30 * 24 * 3600


async def create_file(request: Request) -> Response:
    svc = services(request)
    who = await principal(request)
    form = await receive_upload(request, svc.files)
    upload = form.upload
    try:
        purpose = form.fields.get("purpose")
        if upload is None:
            raise BadRequest(
                "Missing required parameter: 'file'.",
                code="missing_required_parameter",
                param="file",
            )
        if purpose not in UPLOAD_PURPOSES:
            allowed = ", ".join(sorted(UPLOAD_PURPOSES))
            raise BadRequest(
                f"'purpose' must be one of {allowed}.", code="invalid_value", param="purpose"
            )
        requested = _check_expires_after(form.fields)
        inst = who.institution
        expires_at = file_expiry(
            requested, inst.file_expires_after, inst.file_max_expires_after, time.time()
        )
    except BaseException:
        if upload is not None:
            await upload.abort()
        raise
    f = await upload.finish(
        who.institution.id, purpose, form.filename, key_id=who.key_id, expires_at=expires_at
    )
    return JSONResponse(f.to_api())


def _check_expires_after(fields: dict[str, str]) -> int | None:
    """OpenAI's ``expires_after`` (sent as ``expires_after[anchor]`` and
    ``expires_after[seconds]``) needs both: anchor ``created_at`` and 3600..2592000 seconds.
    An incomplete policy is refused rather than silently read as none."""
    given = {k for k in fields if k == "expires_after" or k.startswith("expires_after[")}
    if not given:
        return None
    if fields.get("expires_after[anchor]") != "created_at":
        raise BadRequest(
            "'expires_after.anchor' is required and must be 'created_at'.",
            code="invalid_value",
            param="expires_after.anchor",
        )
    seconds = fields.get("expires_after[seconds]", "")
    if not seconds.isdigit() or not EXPIRES_MIN <= int(seconds) <= EXPIRES_MAX:
        raise BadRequest(
            f"'expires_after.seconds' is required: an integer from {EXPIRES_MIN} to {EXPIRES_MAX}.",
            code="invalid_value",
            param="expires_after.seconds",
        )
    unknown = sorted(given - {"expires_after[anchor]", "expires_after[seconds]"})
    if unknown:
        raise BadRequest(
            f"Unknown field '{unknown[0]}'; expires_after has anchor and seconds.",
            code="invalid_value",
            param="expires_after",
        )
    return int(seconds)


async def list_files(request: Request) -> Response:
    svc = services(request)
    who = await principal(request)
    order = request.query_params.get("order", "desc")
    if order not in ("asc", "desc"):
        raise BadRequest("'order' must be 'asc' or 'desc'.", code="invalid_value", param="order")
    ordering: Literal["asc", "desc"] = "asc" if order == "asc" else "desc"
    page = await svc.files.list(
        who.institution.id,
        purpose=request.query_params.get("purpose") or None,
        limit=query_int(request, "limit", 10_000, 1, 10_000),
        order=ordering,
        after=request.query_params.get("after") or None,
    )
    return JSONResponse(page.to_api())


async def get_file(request: Request) -> Response:
    svc = services(request)
    who = await principal(request)
    f = await svc.files.get(who.institution.id, request.path_params["file_id"])
    return JSONResponse(f.to_api())


async def file_content(request: Request) -> Response:
    svc = services(request)
    who = await principal(request)
    f = await svc.files.get(who.institution.id, request.path_params["file_id"])
    return StreamingResponse(
        svc.files.read(f),
        media_type="application/octet-stream",
        headers={
            "content-length": str(f.bytes),
            "content-disposition": f"attachment; filename*=UTF-8''{quote(f.filename)}",
        },
    )


async def delete_file(request: Request) -> Response:
    svc = services(request)
    who = await principal(request)
    file_id = request.path_params["file_id"]
    await svc.files.delete(who.institution.id, file_id)
    return JSONResponse({"id": file_id, "object": "file", "deleted": True})
