"""``POST /erasure``: an access point erases a key's or a person's data at this site.

The access point (``verbund erase``) names the institution, the subject's key ids and
the ids of its jobs it knows; the site removes those jobs' records and events, their
artefacts (trained models, working folders) and their staged input files, and answers
the counts, which the access point records in its ``data.erase`` audit entry.
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from verbund.agent._auth import Role, require
from verbund.agent._services import AgentServices
from verbund.errors import BadRequest
from verbund.federation import ERASURE_PATH

__all__ = ["routes"]

log = logging.getLogger("verbund.agent")

MAX_IDS = 10_000


def _ids(body: dict[str, object], name: str) -> list[str]:
    raw = body.get(name, [])
    if not isinstance(raw, list) or len(raw) > MAX_IDS or not all(isinstance(x, str) for x in raw):
        raise BadRequest(f"'{name}' must be a list of ids.", param=name)
    return [str(x) for x in raw]


async def erase(request: Request) -> Response:
    caller = require(request, Role.access_point)
    svc: AgentServices = request.app.state.services
    try:
        body = await request.json()
    except ValueError:
        raise BadRequest("The body must be JSON.", code="invalid_json") from None
    if not isinstance(body, dict) or not isinstance(body.get("institution"), str):
        raise BadRequest("Give 'institution', 'keys' and 'jobs'.", param="institution")
    counts = await svc.jobs.erase(body["institution"], _ids(body, "keys"), _ids(body, "jobs"))
    if svc.store.engine.dialect.name == "sqlite":  # nor in the write-ahead log
        async with svc.store.engine.connect() as conn:
            await conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    log.info("erasure for %s through %s: %s", body["institution"], caller.name, counts)
    return JSONResponse({"site": svc.site, **counts})


def routes() -> list[BaseRoute]:
    return [Route(ERASURE_PATH, erase, methods=["POST"])]
