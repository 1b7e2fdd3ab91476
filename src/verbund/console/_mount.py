"""The console as one mount of the access point: pages, their static assets, their errors.

Everything under ``/console`` passes through :class:`SecurityHeaders`, and errors inside
it become HTML pages (a 403 page for a role that may not see a page, a redirect to the
sign-in for a missing or expired session) instead of the API's JSON errors. The static
assets are the package's own files: no CDN, nothing fetched at run time.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from urllib.parse import quote

from starlette.exceptions import HTTPException
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route, Router
from starlette.staticfiles import StaticFiles

from verbund.console import _audit, _federation, _institution, _me, _site
from verbund.console._access import SignInNeeded, signed_in
from verbund.console._page import Console
from verbund.console._security import SecurityHeaders
from verbund.errors import ApiError

__all__ = ["BASE", "LOGIN", "LOGOUT", "console_routes"]

BASE = "/console"
LOGIN = "/auth/login"
LOGOUT = "/auth/logout"

Page = Callable[[Console, Request], Awaitable[Response]]

TITLES = {401: "Please sign in", 403: "Not for your role", 404: "Not found"}


def _error_page(console: Console) -> Callable[[Request, Exception], Awaitable[Response]]:
    async def handle(request: Request, exc: Exception) -> Response:
        if isinstance(exc, SignInNeeded):
            here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"{LOGIN}?next={quote(here, safe='')}", status_code=303)
        if isinstance(exc, ApiError):
            status, message = exc.status, exc.message
        else:
            assert isinstance(exc, HTTPException)
            status, message = exc.status_code, str(exc.detail)
        if request.headers.get("accept", "").startswith("application/json"):
            return Response(message, status_code=status, media_type="text/plain")
        return console.render(
            request,
            "error.html",
            title=TITLES.get(status, "Something went wrong"),
            viewer=None,
            heading=TITLES.get(status, f"Error {status}"),
            message=message,
            status=status,
        )

    return handle


async def _home(c: Console, request: Request) -> Response:
    who = await signed_in(request, None, "")
    return c.render(request, "home.html", title="Console", viewer=who.viewer, csrf=who.csrf)


def console_routes() -> list[BaseRoute]:
    """``/console`` with its pages; built once per access point (no module state)."""
    console = Console(BASE, LOGOUT)

    def page(fn: Page) -> Callable[[Request], Awaitable[Response]]:
        return functools.partial(fn, console)

    routes = [
        Route("/", page(_home), methods=["GET"]),
        Route("/keys", page(_me.keys_page), methods=["GET"]),
        Route("/usage", page(_me.usage_page), methods=["GET"]),
        Route("/models", page(_me.models_page), methods=["GET"]),
        Route("/federation", page(_federation.federation_page), methods=["GET"]),
        Route("/institution", page(_institution.institution_page), methods=["GET"]),
        Route("/site", page(_site.site_page), methods=["GET"]),
        Route("/sites/{name}/load", page(_site.site_load), methods=["GET"]),
        Route("/sites/{name}/{action}", page(_site.site_action), methods=["POST"]),
        Route("/audit", page(_audit.audit_page), methods=["GET"]),
        Route("/audit/export", page(_audit.audit_export), methods=["GET"]),
        Route("/audit/settlement.json", page(_audit.settlement_json), methods=["GET"]),
        Mount("/static", app=StaticFiles(packages=[("verbund.console", "static")])),
    ]
    handler = _error_page(console)
    inner = ExceptionMiddleware(
        Router(routes, redirect_slashes=False),
        handlers={SignInNeeded: handler, ApiError: handler, HTTPException: handler},
    )
    return [
        Route(BASE, lambda request: RedirectResponse(BASE + "/", status_code=308)),
        Mount(BASE, app=SecurityHeaders(inner)),
    ]
