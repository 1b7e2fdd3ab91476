"""Who is calling: an institution's key (inference), or an actor (admin and console API):
a signed-in person's session, a role-scoped admin key, or the bootstrap admin key."""

from __future__ import annotations

import hmac

from starlette.requests import Request

from verbund.errors import AuthenticationError, PermissionDenied
from verbund.gateway._services import Services
from verbund.identity import Session
from verbund.tenancy import Actor, Principal, Role

SESSION_COOKIE = "verbund_session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# the single all-powerful key from the environment: for bootstrapping the federation
BOOTSTRAP = Actor("bootstrap", "admin", Role.federation_admin)


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization")
    if not header:
        raise AuthenticationError(
            "Missing API key: send it as 'Authorization: Bearer <key>'.", code="missing_api_key"
        )
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token or len(token) > 512:
        raise AuthenticationError(
            "Malformed Authorization header: expected 'Bearer <key>'.", code="invalid_authorization"
        )
    return token


def is_admin(services: Services, token: str) -> bool:
    admin = services.admin_key
    return admin is not None and hmac.compare_digest(token.encode(), admin.encode())


async def authenticate(request: Request, services: Services) -> Principal:
    token = bearer_token(request)
    entry = await services.keys.resolve(token)
    if entry is None:
        if is_admin(services, token) or services.identity.admin_keys.resolve(token):
            raise PermissionDenied(
                "Admin keys are for /admin routes; use an institution's key for inference."
            )
        raise AuthenticationError("Invalid or revoked API key.")
    inst = services.institutions.get(entry.institution_id)
    if inst is None:
        raise PermissionDenied("The key's institution is no longer a member.")
    person = services.identity.people.quota(entry.person_id) if entry.person_id else None
    return Principal(entry, inst, person)


async def session_of(request: Request, services: Services) -> Session | None:
    token = request.cookies.get(SESSION_COOKIE)
    return await services.identity.sessions.get(token) if token else None


def check_csrf(request: Request, session: Session, token: str | None = None) -> None:
    """A state-changing request from a browser session must carry the session's CSRF
    token (header ``X-CSRF-Token``, or ``token`` from a form); another site's page
    cannot read it, so it cannot forge the request."""
    sent = token if token is not None else request.headers.get(CSRF_HEADER, "")
    if not hmac.compare_digest(sent.encode(), session.csrf.encode()):
        raise PermissionDenied(
            "Missing or wrong CSRF token: send the session's token as X-CSRF-Token.",
            code="csrf_failed",
        )


async def resolve_actor(request: Request, services: Services) -> Actor:
    """The actor behind a request: a Bearer admin key if one is sent, else the session
    cookie (with its CSRF token on anything but a read)."""
    if request.headers.get("authorization"):
        token = bearer_token(request)
        if is_admin(services, token):
            return BOOTSTRAP
        actor = services.identity.admin_keys.resolve(token)
        if actor is not None:
            return actor
        raise PermissionDenied(
            "This route needs an admin key (or a signed-in person whose role allows it)."
            if services.admin_key or services.identity.providers
            else "No admin key is configured for this access point."
        )
    session = await session_of(request, services)
    if session is None:
        raise AuthenticationError(
            "Sign in at /auth/login, or send an admin key as 'Authorization: Bearer <key>'.",
            code="not_signed_in",
        )
    if request.method not in SAFE_METHODS:
        check_csrf(request, session)
    return session.actor
