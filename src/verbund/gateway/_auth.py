"""Who is calling: an institution's key, or the federation admin key."""

from __future__ import annotations

import hmac

from starlette.requests import Request

from verbund.errors import AuthenticationError, PermissionDenied
from verbund.gateway._services import Services
from verbund.tenancy import Principal


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
        if is_admin(services, token):
            raise PermissionDenied(
                "The admin key is for /admin routes; use an institution's key for inference."
            )
        raise AuthenticationError("Invalid or revoked API key.")
    inst = services.institutions.get(entry.institution_id)
    if inst is None:
        raise PermissionDenied("The key's institution is no longer a member.")
    return Principal(entry, inst)


def require_admin(request: Request, services: Services) -> str:
    token = bearer_token(request)
    if is_admin(services, token):
        return "admin"
    raise (
        PermissionDenied("This route needs the federation admin key.")
        if services.admin_key
        else PermissionDenied("No admin key is configured for this access point.")
    )
