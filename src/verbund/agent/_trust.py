"""The site as a partner that signs on its own (docs/trust.md): checkpoints of access
points' audit chains, and its monthly usage statements.

``POST /trust/checkpoints`` with ``{"chain", "index", "hash"}``: an access point asks the
site to vouch for its chain's head. The agent keeps every checkpoint it signed in its
own store — outside the access point's database, which is the point — and never signs a
head that contradicts one it signed before (:func:`refusal`): a shorter chain (entries
deleted) or another hash for an entry it vouched for (a rewritten or forked history) is
refused with 409, and the access point's log says so. ``GET /trust/checkpoints`` lists
what it signed, so a partner can fetch the site's copies for ``verbund audit verify``.

``GET /usage/statements?month=YYYY-MM``: the site's signed statement of what its relay
served that month (:mod:`verbund.agent._meter`), for ``verbund settle``.

Without a signing key (``[trust]`` in site.toml) these routes answer 409.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from verbund.agent._auth import Role, require
from verbund.agent._services import AgentServices
from verbund.errors import BadRequest, Conflict
from verbund.federation import TRUST_CHECKPOINTS_PATH, USAGE_STATEMENTS_PATH
from verbund.store import CheckpointRow
from verbund.trust import Checkpoint, SigningKey, sign_checkpoint

__all__ = ["refusal", "routes"]


def refusal(signed: Sequence[Checkpoint], index: int, head: str) -> str | None:
    """Why the site may not vouch for "entry #index has hash head" given what it signed
    of the same chain before; None when it may."""
    for cp in signed:
        if cp.index == index and cp.hash != head:
            return (
                f"this site signed entry #{index} with hash {cp.hash[:12]}… before; "
                f"the chain now shows {head[:12]}… (rewritten or forked)"
            )
    newest = max((cp.index for cp in signed), default=0)
    if index < newest:
        return (
            f"this site signed the chain up to entry #{newest} before; it now ends at "
            f"entry #{index} (truncated)"
        )
    return None


def _signing(request: Request, *roles: Role) -> tuple[AgentServices, SigningKey]:
    require(request, *roles)
    svc: AgentServices = request.app.state.services
    if svc.signing is None:
        raise Conflict(
            f"Site {svc.site} has no signing key ([trust] signing_key_file or "
            "signing_key_env in site.toml).",
            code="no_signing_key",
        )
    return svc, svc.signing


async def _signed(svc: AgentServices, chain: str) -> list[Checkpoint]:
    async with svc.store.session() as s:
        rows = await s.execute(
            select(CheckpointRow)
            .where(CheckpointRow.chain == chain, CheckpointRow.signer == svc.site)
            .order_by(CheckpointRow.index)
        )
        return [Checkpoint.of_row(r) for r in rows.scalars()]


async def sign(request: Request) -> Response:
    svc, key = _signing(request, Role.access_point, Role.operator)
    try:
        body = await request.json()
        chain, index, head = str(body["chain"]), int(body["index"]), str(body["hash"])
    except (ValueError, KeyError, TypeError):
        raise BadRequest("Give 'chain', 'index' and 'hash' of the chain's head.") from None
    if index < 0 or len(head) != 64 or not chain or len(chain) > 128:
        raise BadRequest("'index' or 'hash' out of range.", param="hash")
    async with svc.checkpoint_lock:  # one decision at a time: no two heads slip past
        signed = await _signed(svc, chain)
        same = next((c for c in signed if c.index == index and c.hash == head), None)
        if same is not None:
            return JSONResponse(same.to_json())
        why = refusal(signed, index, head)
        if why is not None:
            raise Conflict(f"Not signing: {why}.", code="checkpoint_contradicts")
        cp = sign_checkpoint(key, chain, index, head, time.time())
        async with svc.store.session() as s, s.begin():
            s.add(cp.row(cp.ts))
    return JSONResponse(cp.to_json(), status_code=201)


async def held(request: Request) -> Response:
    svc, key = _signing(request, Role.access_point, Role.operator)
    chain = request.query_params.get("chain", "federation")
    return JSONResponse(
        {
            "site": svc.site,
            "public_key": key.public_b64,
            "data": [c.to_json() for c in await _signed(svc, chain)],
        }
    )


async def statement(request: Request) -> Response:
    svc, key = _signing(request, Role.access_point, Role.operator)
    month = request.query_params.get("month", "")
    await svc.counters.read(svc.offer)  # the engines' counters up to now
    metered, unmetered = svc.counters.models(svc.offer)
    statement = await svc.meter.statement(key, month, metered, unmetered)
    return JSONResponse(statement.to_json())


def routes() -> list[BaseRoute]:
    return [
        Route(TRUST_CHECKPOINTS_PATH, sign, methods=["POST"]),
        Route(TRUST_CHECKPOINTS_PATH, held, methods=["GET"]),
        Route(USAGE_STATEMENTS_PATH, statement, methods=["GET"]),
    ]
