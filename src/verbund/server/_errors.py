"""How an HTTP service of Verbund answers what went wrong: always in OpenAI's error shape.

The access point and the site agent both mount these handlers, so a client (or an access
point talking to an agent) reads one shape whichever of them failed.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from verbund.errors import ApiError, internal_error_body

__all__ = ["error_handlers"]

Handler = Callable[[Request, Exception], Awaitable[Response]]


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
    body = {"error": {"message": str(exc.detail), "type": kind, "code": code, "param": None}}
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


def error_handlers(service: str, log: logging.Logger) -> dict[type[Exception], Handler]:
    """Starlette ``exception_handlers`` for ``service`` ("access point", "site agent"):
    an :class:`ApiError` as its body, Starlette's own 404/405 in OpenAI's shape, a client
    gone mid-body as 499 (a debug line: one per such client would flood the log at ERROR)
    and anything else as a 500 that names no detail (logged with its traceback)."""

    async def client_gone(request: Request, exc: Exception) -> Response:
        log.debug("client disconnected while sending %s %s", request.method, request.url.path)
        return Response(status_code=499)

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error in %s %s", request.method, request.url.path)
        return JSONResponse(internal_error_body(service), status_code=500)

    return {
        ApiError: _api_error,
        HTTPException: _http_error,
        ClientDisconnect: client_gone,
        Exception: unexpected,
    }
