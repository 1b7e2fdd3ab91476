"""The site's file store, for the access points: files whose data class only this site (or
sites like it) may hold, batch outputs of such files, and jobs' inputs.

Keys are made by the access points (checked against the file store's strict pattern
here too). An upload is written under a temporary name and renamed only once its whole
body has arrived: a client that goes away half-way, or an agent killed half-way, leaves
nothing (the temporary files of a killed agent are removed when it starts). Every write
names the data class of what it holds; above the site's ``max_data_class`` it is
refused with 403 before a byte is written.
"""

from __future__ import annotations

import re

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from verbund.agent._auth import Role, require
from verbund.agent._services import AgentServices
from verbund.config import DataClass
from verbund.errors import BadRequest, NotFound, PermissionDenied
from verbund.files import LocalBlobStore, check_key, write_blob
from verbund.policy import DATA_CLASS_HEADER

__all__ = ["check_class", "routes"]

_RANGE = re.compile(r"^bytes=(\d+)-(\d+)$")


def _store(
    request: Request, roles: tuple[Role, ...] = (Role.access_point,)
) -> tuple[AgentServices, LocalBlobStore, str]:
    require(request, *roles)
    svc: AgentServices = request.app.state.services
    try:
        key = check_key(request.path_params["key"])
    except ValueError:
        raise BadRequest("Invalid blob key.", code="invalid_key", param="key") from None
    return svc, svc.blobs, key


def _check_class(request: Request, svc: AgentServices) -> None:
    check_class(request.headers.get(DATA_CLASS_HEADER, ""), svc)


def check_class(raw: str, svc: AgentServices, param: str | None = None) -> DataClass:
    """The data class an access point names (``public`` if none); above what the site
    may take it is refused: defence in depth against a misrouting access point, for
    writes, relayed requests and files moving in alike."""
    try:
        data_class = DataClass(raw) if raw else DataClass.public
    except ValueError:
        raise BadRequest(
            f"Unknown data class {raw!r}.", code="invalid_data_class", param=param
        ) from None
    limit = svc.config.site.max_data_class
    if data_class.rank > limit.rank:
        raise PermissionDenied(
            f"Site {svc.site} takes data up to {limit.value}, not {data_class.value}.",
            code="data_class_refused",
        )
    return data_class


async def put_blob(request: Request) -> Response:
    svc, blobs, key = _store(request)
    _check_class(request, svc)
    try:
        size = await write_blob(blobs, key, request.stream())
    except ClientDisconnect:  # the access point went away: nothing was stored
        return Response(status_code=499)
    return JSONResponse({"key": key, "bytes": size}, status_code=201)


async def append_blob(request: Request) -> Response:
    svc, blobs, key = _store(request)
    _check_class(request, svc)
    data = await request.body()
    offset = await blobs.append(key, data)
    return JSONResponse({"key": key, "offset": offset})


async def get_blob(request: Request) -> Response:
    # a peer: another site's agent with a read grant for this blob (see _transfers)
    _, blobs, key = _store(request, (Role.access_point, Role.peer))
    try:
        size = await blobs.size(key)
    except KeyError:
        raise NotFound(f"No blob {key} at this site.", code="blob_not_found") from None
    wanted = request.headers.get("range")
    if wanted:
        m = _RANGE.match(wanted)
        if m is None or int(m.group(1)) > int(m.group(2)) or int(m.group(2)) >= size:
            return Response(status_code=416, headers={"content-range": f"bytes */{size}"})
        start, end = int(m.group(1)), int(m.group(2))
        data = await blobs.read_range(key, start, end - start + 1)
        return Response(
            data,
            status_code=206,
            media_type="application/octet-stream",
            headers={"content-range": f"bytes {start}-{end}/{size}"},
        )
    return StreamingResponse(
        blobs.read(key),
        media_type="application/octet-stream",
        headers={"content-length": str(size)},
    )


async def blob_size(request: Request) -> Response:
    _, blobs, key = _store(request)
    try:
        return JSONResponse({"key": key, "bytes": await blobs.size(key)})
    except KeyError:
        raise NotFound(f"No blob {key} at this site.", code="blob_not_found") from None


async def delete_blob(request: Request) -> Response:
    _, blobs, key = _store(request)
    await blobs.delete(key)
    return JSONResponse({"key": key, "deleted": True})


async def list_blobs(request: Request) -> Response:
    require(request, Role.access_point)
    svc: AgentServices = request.app.state.services
    prefix = request.query_params.get("prefix", "")
    return JSONResponse({"keys": await svc.blobs.keys(prefix)})


def routes() -> list[BaseRoute]:
    return [
        Route("/blobs", list_blobs, methods=["GET"]),
        Route("/blobs/{key}", put_blob, methods=["PUT"]),
        Route("/blobs/{key}", get_blob, methods=["GET"]),
        Route("/blobs/{key}", delete_blob, methods=["DELETE"]),
        Route("/blobs/{key}/size", blob_size, methods=["GET"]),
        Route("/blobs/{key}/append", append_blob, methods=["POST"]),
    ]
