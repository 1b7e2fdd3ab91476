"""Signing people in and out with OpenID Connect (authorization code flow with PKCE).

``GET /auth/login?provider=&next=&prompt=login`` sends the browser to the identity
provider (``prompt=login``: sign in again there, e.g. as another person);
``GET /auth/callback`` checks ``state`` (one use), exchanges the code, verifies the ID
token (signature, issuer, audience, expiry, nonce) and opens a new server-side session;
``POST /auth/logout`` ends it (and, where the provider offers it, the provider's too).
``GET /auth/session`` tells the console who is signed in and the CSRF token its
state-changing requests must carry. ``next`` may only name a path on this access point.
"""

from __future__ import annotations

import html
import logging
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from verbund.errors import ApiError, SignInFailed
from verbund.gateway._auth import SESSION_COOKIE, check_csrf, session_of
from verbund.gateway._deps import services
from verbund.gateway._services import Services
from verbund.identity import Refusal

log = logging.getLogger("verbund.gateway")

DEFAULT_RETURN = "/console"
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
# pages of this module are never framed and run no script
PAGE_HEADERS = {
    "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "frame-ancestors 'none'; form-action 'self'",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "cache-control": "no-store",
    "referrer-policy": "same-origin",
}


def safe_return(value: str | None) -> str:
    """``value`` if it is a path on this access point, else the console: no scheme, no
    host, no ``//`` or ``/\\`` (which browsers read as another host), no control
    characters."""
    if not value or len(value) > 512 or not value.startswith("/"):
        return DEFAULT_RETURN
    if value.startswith(("//", "/\\")) or any(c in value for c in "\\\r\n\t\0"):
        return DEFAULT_RETURN
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return DEFAULT_RETURN
    return value


def _base_url(request: Request, svc: Services) -> str:
    return svc.config.auth.public_url or f"{request.url.scheme}://{request.url.netloc}"


def redirect_uri(request: Request, svc: Services) -> str:
    return _base_url(request, svc) + "/auth/callback"


def cookie_secure(request: Request, svc: Services) -> bool:
    """Secure cookies always, except over plain HTTP to a loopback address (the demo on
    one machine), where no browser or client would send them back."""
    if svc.config.auth.cookie_secure == "always":
        return True
    base = urlsplit(_base_url(request, svc))
    return not (base.scheme == "http" and base.hostname in LOOPBACK)


def page(title: str, message: str, status: int, link: tuple[str, str] | None = None) -> Response:
    """A small page for people (sign-in refused, signed out); every text is escaped."""
    more = ""
    if link is not None:
        more = f'<p><a href="{html.escape(link[0])}">{html.escape(link[1])}</a></p>'
    body = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;max-width:40em;margin:4em auto}</style></head>"
        f"<body><h1>{html.escape(title)}</h1><p>{html.escape(message)}</p>{more}</body></html>"
    )
    return HTMLResponse(body, status_code=status, headers=PAGE_HEADERS)


async def providers(request: Request) -> Response:
    """The identity providers a person may sign in with (for the console's sign-in page)."""
    svc = services(request)
    return JSONResponse(
        {
            "data": [
                {
                    "name": c.name,
                    "title": c.config.title or c.name,
                    "login_url": f"/auth/login?provider={c.name}",
                }
                for c in svc.identity.providers.values()
            ]
        }
    )


async def login(request: Request) -> Response:
    svc = services(request)
    client = svc.identity.provider(request.query_params.get("provider"))
    return_to = safe_return(request.query_params.get("next"))
    state, flow = await svc.identity.sessions.begin_login(client.name, return_to)
    prompt = request.query_params.get("prompt", "")
    url = await client.authorization_url(
        redirect_uri(request, svc),
        state,
        flow.nonce,
        flow.code_verifier,
        prompt if prompt in ("login", "select_account") else "",
    )
    return RedirectResponse(url, status_code=302, headers={"cache-control": "no-store"})


async def callback(request: Request) -> Response:
    svc = services(request)
    q = request.query_params
    if q.get("error"):
        return page(
            "Sign-in cancelled",
            f"The identity provider answered: {q.get('error')}.",
            401,
            ("/auth/login", "Sign in again"),
        )
    state, code = q.get("state"), q.get("code")
    if not state or not code:
        return page("Sign-in failed", "The answer lacks its state or code.", 400)
    try:
        flow = await svc.identity.sessions.take_login(state)
        if flow is None:
            raise SignInFailed("This sign-in is unknown, was used already or has expired.")
        members = [i.id for i in svc.institutions.all()]
        result = await svc.identity.finish_login(flow, code, redirect_uri(request, svc), members)
    except ApiError as exc:
        return page("Sign-in failed", exc.message, exc.status, ("/auth/login", "Sign in again"))
    if isinstance(result, Refusal):
        return page("Not a member", result.reason, 403)
    old = request.cookies.get(SESSION_COOKIE)
    if old:  # whatever session id the browser brought is never carried over
        await svc.identity.sessions.end(old)
    token, _ = await svc.identity.sessions.create(result, flow.provider)
    log.info("signed in: %s as %s", result.id, result.role.value)
    response = RedirectResponse(
        flow.return_to, status_code=303, headers={"cache-control": "no-store"}
    )
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(svc.identity.sessions.session_seconds),
        path="/",
        secure=cookie_secure(request, svc),
        httponly=True,
        samesite="lax",
    )
    return response


async def session(request: Request) -> Response:
    svc = services(request)
    current = await session_of(request, svc)
    if current is None:
        return JSONResponse(
            {
                "error": {
                    "message": "Not signed in.",
                    "type": "authentication_error",
                    "code": "not_signed_in",
                    "param": None,
                }
            },
            status_code=401,
            headers={"cache-control": "no-store"},
        )
    a = current.actor
    person = await svc.identity.people.get(a.id)
    return JSONResponse(
        {
            "id": a.id,
            "role": a.role.value,
            "institution": a.institution,
            "site": a.site,
            "display_name": person.display_name if person else "",
            "provider": current.provider,
            "expires_at": int(current.expires_at),
            "csrf_token": current.csrf,
        },
        headers={"cache-control": "no-store"},
    )


async def logout(request: Request) -> Response:
    """End the session (CSRF-checked: a form's ``csrf_token`` or the header), then the
    provider's session where it offers RP-initiated logout."""
    svc = services(request)
    current = await session_of(request, svc)
    wants_json = "x-csrf-token" in request.headers
    end_url: str | None = None
    if current is not None:
        token = None if wants_json else str((await request.form()).get("csrf_token") or "")
        check_csrf(request, current, token)
        await svc.identity.sessions.end(request.cookies[SESSION_COOKIE])
        client = svc.identity.providers.get(current.provider)
        if client is not None:
            try:
                end_url = await client.end_session_url(_base_url(request, svc) + "/auth/signed-out")
            except ApiError:
                end_url = None  # signed out here; the provider is away
    response: Response
    if wants_json:
        response = JSONResponse({"signed_out": True, "end_session_url": end_url})
    else:
        response = RedirectResponse(end_url or "/auth/signed-out", status_code=303)
    response.delete_cookie(
        SESSION_COOKIE, path="/", secure=cookie_secure(request, svc), httponly=True, samesite="lax"
    )
    return response


async def signed_out(request: Request) -> Response:
    return page("Signed out", "You are signed out of Verbund.", 200, ("/console", "Back"))
