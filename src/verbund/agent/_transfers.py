"""Files moving agent to agent: a job's data goes from the site that holds it to the
compliant site that runs the job, never through an access point.

Why the receiving agent pulls (and not the holding agent pushes):

- The receiver decides whether it may hold the data. It checks the data class against
  its own ``max_data_class`` before a byte moves (defence in depth against a
  misconfigured access point) and writes the file as every upload, under a temporary
  name renamed only when complete, so a transfer cut half-way leaves nothing.
- The holder only has to allow one read. The access point asks it for a grant
  (``POST /transfers/grants``): signed, for one blob and one receiving site, valid for a
  minute and usable once (:mod:`._grants`). A leaked grant reads one file once, for a
  minute; it writes nothing and opens no other route. A push would need the holder to
  write into the receiver's store with a credential the receiver issued, a second kind of
  write access between sites.
- No agent needs a standing credential at another agent, and the access points stay the
  only parties that decide where data goes: the holder issues a grant only to an access
  point, the receiver fetches only when an access point asks. The bytes travel on the
  one connection between the two agents.

The receiver reaches the holder at the URL the holder's grant names (``[agent]
peer_url``, for sites whose agents see each other at other addresses than the access
points see them) or else at the access point's ``agent_url`` of that site.
"""

from __future__ import annotations

import logging

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from verbund.agent._auth import Role, require
from verbund.agent._blobs import check_class
from verbund.agent._jobs import json_body
from verbund.agent._services import AgentServices
from verbund.errors import ApiError, BadRequest, Conflict, NotFound, SiteAgentUnavailable
from verbund.files import check_key, write_blob
from verbund.store import STORE_FAILURES

__all__ = ["routes"]

log = logging.getLogger("verbund.agent")


def _field(body: object, name: str) -> str:
    value = body.get(name) if isinstance(body, dict) else None
    if not isinstance(value, str) or not value:
        raise BadRequest(f"'{name}' is required.", code="invalid_value", param=name)
    return value


def _key(value: str, param: str) -> str:
    try:
        return check_key(value)
    except ValueError:
        raise BadRequest("Invalid blob key.", code="invalid_key", param=param) from None


async def grant(request: Request) -> Response:
    """Holder: a read grant for one blob, for the site an access point names."""
    caller = require(request, Role.access_point)
    svc: AgentServices = request.app.state.services
    body = await json_body(request)
    key = _key(_field(body, "key"), "key")
    to_site = _field(body, "to_site")
    data_class = check_class(_field(body, "data_class"), svc, "data_class")
    try:
        size = await svc.blobs.size(key)
    except KeyError:
        raise NotFound(f"No blob {key} at this site.", code="blob_not_found") from None
    token, g = svc.grants.issue(key, to_site, data_class.value)
    await _audit(
        svc,
        f"access_point:{caller.name}",
        "blob.grant",
        key,
        {"to_site": to_site, "data_class": data_class.value, "bytes": size},
    )
    return JSONResponse(
        {
            "grant": token,
            "key": key,
            "bytes": size,
            "expires_at": g.expires_at,
            "url": svc.config.agent.peer_url,  # "" = where the access points reach it
        }
    )


async def fetch(request: Request) -> Response:
    """Receiver: pull one blob from another site's agent with its grant; complete or
    absent."""
    caller = require(request, Role.access_point)
    svc: AgentServices = request.app.state.services
    body = await json_body(request)
    key = _key(_field(body, "key"), "key")
    data_class = check_class(_field(body, "data_class"), svc, "data_class")  # before a byte moves
    source = body.get("source")
    site, url = _field(source, "site"), _field(source, "url").rstrip("/")
    remote, token = _key(_field(source, "key"), "source.key"), _field(source, "grant")
    if not url.startswith(("http://", "https://")):
        raise BadRequest("'source.url' must be an http(s) URL.", param="source.url")
    if site == svc.site:
        raise BadRequest("The file is already at this site.", param="source.site")
    request_ = svc.peers.build_request(
        "GET", f"{url}/blobs/{remote}", headers={"authorization": f"Bearer {token}"}
    )
    try:
        resp = await svc.peers.send(request_, stream=True)
    except httpx.HTTPError as exc:
        raise _away(site, exc) from None
    try:
        if not resp.is_success:
            raise Conflict(
                f"The agent of site {site} refused the transfer ({resp.status_code}).",
                code="transfer_refused",
            )
        length = resp.headers.get("content-length", "")
        expected = int(length) if length.isdigit() else -1
        size = await write_blob(svc.blobs, key, resp.aiter_bytes(), data_class.value)
    except httpx.HTTPError as exc:  # cut half-way: write_blob left nothing
        raise _away(site, exc) from None
    finally:
        await resp.aclose()
    if expected >= 0 and size != expected:
        await svc.blobs.delete(key)
        raise Conflict(
            f"The agent of site {site} sent {size} of {expected} bytes.", code="transfer_short"
        )
    await _audit(
        svc,
        f"access_point:{caller.name}",
        "blob.fetch",
        key,
        {"from_site": site, "key": remote, "data_class": data_class.value, "bytes": size},
    )
    log.info("blob %s fetched from site %s (%d bytes)", key, site, size)
    return JSONResponse({"key": key, "bytes": size, "from_site": site}, status_code=201)


def _away(site: str, exc: httpx.HTTPError) -> ApiError:
    return SiteAgentUnavailable(
        f"The agent of site {site} could not be reached from here ({type(exc).__name__}).",
        code="peer_unavailable",
    )


async def _audit(
    svc: AgentServices, actor: str, action: str, target: str, after: dict[str, object]
) -> None:
    try:
        async with svc.store.session() as s, s.begin():
            await svc.audit.append(s, actor=actor, action=action, target=target, after=after)
    except STORE_FAILURES as exc:
        log.warning("%s of %s not audited: %s", action, target, type(exc).__name__)


def routes() -> list[BaseRoute]:
    return [
        Route("/transfers/grants", grant, methods=["POST"]),
        Route("/transfers", fetch, methods=["POST"]),
    ]
