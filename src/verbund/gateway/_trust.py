"""Admin routes that partners use to check each other: signed checkpoints of the audit
chain (exchange, sign on demand) and the chain checked against them."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from verbund.errors import BadRequest
from verbund.gateway._deps import json_body, require, services
from verbund.tenancy import Permission
from verbund.trust import Checkpoint, Verdict

_exchange = require(Permission.audit_checkpoint)
_BODY_LIMIT = 1024 * 1024


async def list_checkpoints(request: Request) -> Response:
    """The checkpoints this access point holds, and the keys it checks them with."""
    await _exchange(request)
    book = services(request).checkpoints
    return JSONResponse(
        {
            "chain": book.chain,
            "signer": book.signer,
            "public_keys": book.keys.as_b64(),
            "data": [c.to_json() for c in await book.held()],
        }
    )


async def post_checkpoints(request: Request) -> Response:
    """``{"checkpoints": [...]}``: keep partners' checkpoints (each must verify with a
    configured or accepted key). ``{"sign": true}``: also sign this chain's head now;
    ``{"sites": true}``: ask the sites' agents to sign it with their own keys. Answers
    with this access point's new checkpoint and what each site did."""
    await _exchange(request)
    book = services(request).checkpoints
    _, body = await json_body(request, _BODY_LIMIT)
    raw = body.get("checkpoints", [])
    if not isinstance(raw, list):
        raise BadRequest("checkpoints: must be a list", param="checkpoints")
    try:
        received = [Checkpoint.from_json(c) for c in raw]
    except ValueError as exc:
        raise BadRequest(str(exc), param="checkpoints") from None
    new = await book.receive(received)
    signed = await book.sign_head() if body.get("sign") is True else None
    sites = await book.sign_at_sites() if body.get("sites") is True else None
    return JSONResponse(
        {"received": new, "signed": signed.to_json() if signed else None, "sites": sites},
        status_code=200,
    )


async def verify_against_checkpoints(request: Request) -> Response:
    await _exchange(request)
    return JSONResponse(verdict_json(await services(request).checkpoints.verify()))


def verdict_json(v: Verdict) -> dict[str, object]:
    return {
        "ok": v.ok,
        "entries": v.entries,
        "checkpoints_checked": v.checked,
        "problem": v.problem or None,
        "first_disagreeing": v.first_disagreeing,
        "contradicts": v.contradicts.to_json() if v.contradicts else None,
        "follows": v.other.to_json() if v.other else None,
        "rejected": [c.to_json() for c in v.rejected],
        "detail": v.describe(),
    }
