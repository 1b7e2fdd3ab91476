"""What routes take from a request, each written once: the services, the caller (an
institution's key, or an actor whose permissions :func:`require` checks), the request's
data class and priority, the body (size-limited, parsed, validated) and query
parameters. Every route uses these; none reaches into ``request.app.state`` itself.
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from verbund.config import DataClass
from verbund.errors import BadRequest, PermissionDenied
from verbund.gateway._auth import authenticate, resolve_actor
from verbund.gateway._body import parse_object, read_body
from verbund.gateway._services import Services
from verbund.policy import DATA_CLASS_HEADER, request_data_class
from verbund.tenancy import Actor, Permission, Principal, can

__all__ = [
    "PERSON_HEADERS",
    "PRIORITY_HEADER",
    "Target",
    "actor",
    "authorize",
    "data_class",
    "json_body",
    "path_param",
    "person",
    "principal",
    "priority",
    "query_int",
    "query_param",
    "query_time",
    "request_id",
    "require",
    "services",
    "validated",
]

PRIORITY_HEADER = "x-verbund-priority"
M = TypeVar("M", bound=BaseModel)
_UNION_TAG = re.compile(r"[-\[]")
_TYPE_TAGS = {"int", "float", "str", "bool", "dict", "list", "none"}


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


def request_id(request: Request) -> str:
    rid: str = request.state.request_id
    return rid


async def principal(request: Request) -> Principal:
    """The institution's key that signs the request (401/403 otherwise)."""
    return await authenticate(request, services(request))


async def actor(request: Request) -> Actor:
    """Who acts on the admin or console API: a session, an admin key, the bootstrap key."""
    return await resolve_actor(request, services(request))


Target = Callable[[Request], str | None]


def path_param(name: str) -> Target:
    return lambda request: request.path_params.get(name)


def query_param(name: str) -> Target:
    """The query parameter; absent or empty means "federation-wide" (``None``)."""
    return lambda request: request.query_params.get(name) or None


def authorize(who: Actor, permission: Permission, target: str | None = None) -> None:
    """403 unless ``who`` may do ``permission`` to ``target`` (:func:`verbund.tenancy.can`)."""
    if not can(who, permission, target):
        where = f"'{target}'" if target else "the whole federation"
        raise PermissionDenied(
            f"Your role ({who.role.value}) may not do {permission.value} for {where}.",
            code="role_forbidden",
        )


def require(
    permission: Permission, target: Target | None = None
) -> Callable[[Request], Awaitable[Actor]]:
    """A route's one permission check: the actor, once it may do ``permission`` to the
    target read from the request (``None``: the whole federation)."""

    async def dependency(request: Request) -> Actor:
        who = await actor(request)
        authorize(who, permission, target(request) if target is not None else None)
        return who

    return dependency


# what chat front-ends forward about their signed-in user (Open WebUI with
# ENABLE_FORWARD_USER_INFO_HEADERS), most stable first
PERSON_HEADERS = ("x-openwebui-user-id", "x-openwebui-user-email", "x-verbund-person")


def person(request: Request, who: Principal) -> str:
    """The person behind a front-end's key, as its user headers name them ("" if the key
    is not marked ``front_end``: anyone else's headers are ignored, since any client
    could send them). Only a keyed hash of it is ever kept (admission)."""
    if not who.key.front_end:
        return ""
    for name in PERSON_HEADERS:
        value = request.headers.get(name, "").strip()
        if value:
            return f"{name}:{value[:256]}"
    return ""


def data_class(request: Request, who: Principal) -> DataClass:
    """The higher of the key's default and the ``X-Verbund-Data-Class`` header."""
    key_class = who.key.data_class
    default = DataClass(key_class) if key_class else who.institution.default_data_class
    return request_data_class(default, request.headers.get(DATA_CLASS_HEADER))


def receipt_required(request: Request, who: Principal) -> bool:
    """``X-Verbund-Receipt: required`` or the institution's ``require_receipts``: the
    serving site must sign a processing receipt (docs/trust.md). A client cannot opt out
    of its institution's policy; any other header value is refused."""
    value = request.headers.get("x-verbund-receipt", "").strip().lower()
    if value not in ("", "required"):
        raise BadRequest(
            "X-Verbund-Receipt must be 'required' (or absent).",
            code="invalid_receipt_header",
            param="X-Verbund-Receipt",
        )
    return value == "required" or who.institution.require_receipts


def priority(request: Request) -> str:
    value = request.headers.get(PRIORITY_HEADER, "interactive")
    if value not in ("interactive", "batch"):
        raise BadRequest(
            "X-Verbund-Priority must be interactive or batch.",
            code="invalid_priority",
            param="X-Verbund-Priority",
        )
    return value


async def json_body(request: Request, limit: int | None = None) -> tuple[bytes, dict[str, Any]]:
    """The body as bytes and as a JSON object; ``limit`` defaults to
    ``limits.max_body_bytes``."""
    limits = services(request).config.limits
    raw = await read_body(request, limits.max_body_bytes if limit is None else limit)
    return raw, parse_object(raw, limits.max_json_depth)


def validated(model: type[M], body: dict[str, Any]) -> M:
    """``body`` as ``model``, or a 400 that names the first wrong field by its path."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        # drop pydantic's union-member tags ("constrained-int", "literal['auto']")
        parts = [str(p) for p in err["loc"] if not _UNION_TAG.search(str(p))]
        field = ".".join(p for p in parts if p not in _TYPE_TAGS) or None
        raise BadRequest(
            f"{field}: {err['msg']}" if field else err["msg"], code="invalid_value", param=field
        ) from None


def query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise BadRequest(
            f"'{name}' must be an integer from {low} to {high}.", code="invalid_value", param=name
        )
    return int(raw)


def query_time(request: Request, name: str) -> float | None:
    """A Unix time in seconds from the query; absent or empty is ``None``."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):  # nan and inf parse as floats but name no time
        raise BadRequest(f"'{name}' must be a Unix time in seconds.", param=name)
    return value
