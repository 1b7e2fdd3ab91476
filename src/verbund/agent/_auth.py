"""Who may call the agent: the access points and the site's operators, by bearer
credential (and, with mutual TLS, by certificate first — the TLS layer refuses a caller
without one before any HTTP is read).

Every request is checked here, before routing: an unknown, missing or malformed
credential gets 401 in OpenAI's error shape and reaches no route, so a forged or
replayed call without a valid credential changes nothing. The comparison runs over every
known credential with :func:`hmac.compare_digest`, so neither the answer nor its timing
says which credential came close.
"""

from __future__ import annotations

import enum
import hmac
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import orjson
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from verbund.agent._config import Credential, SiteAgentConfig
from verbund.agent._grants import GRANT_PREFIX, Grants
from verbund.errors import AuthenticationError, ConfigError, PermissionDenied

__all__ = ["AgentAuthMiddleware", "Caller", "Credentials", "Role", "caller_of", "require"]


class Role(enum.StrEnum):
    access_point = "access_point"  # reads the catalogue, relays inference, places work
    operator = "operator"  # this site's operator: its lifecycle and its offer
    peer = "peer"  # another site's agent with a read grant for one blob (see _grants)


@dataclass(frozen=True, slots=True)
class Caller:
    role: Role
    name: str  # the [[access_points]] / [[operators]] entry: the actor in logs and audit


class Credentials:
    """The credentials the agent accepts, read once from the environment at start."""

    def __init__(self, entries: Mapping[bytes, Caller]) -> None:
        self._entries = list(entries.items())

    @classmethod
    def from_config(
        cls, config: SiteAgentConfig, env: Mapping[str, str] | None = None
    ) -> Credentials:
        env = os.environ if env is None else env
        entries: dict[bytes, Caller] = {}
        missing: list[tuple[str, str]] = []
        groups: tuple[tuple[str, Role, Sequence[Credential]], ...] = (
            ("access_points", Role.access_point, config.access_points),
            ("operators", Role.operator, config.operators),
        )
        for section, role, items in groups:
            for i, item in enumerate(items):
                secret = env.get(item.key_env, "")
                if len(secret) < 16:
                    missing.append(
                        (
                            f"{section}[{i}:{item.name}].key_env",
                            f"${item.key_env} must hold a credential of at least 16 characters",
                        )
                    )
                    continue
                if secret.encode() in entries:
                    missing.append((f"{section}[{i}:{item.name}].key_env", "credential reused"))
                    continue
                entries[secret.encode()] = Caller(role, item.name)
        if missing:
            raise ConfigError(missing)
        return cls(entries)

    def replace(self, other: Credentials) -> None:
        """Take ``other``'s credentials (site.toml read again); effective at once."""
        self._entries = other._entries

    def match(self, token: bytes) -> Caller | None:
        found: Caller | None = None
        for secret, caller in self._entries:  # no early exit: same time for every miss
            if hmac.compare_digest(secret, token):
                found = caller
        return found


def _bearer(scope: Scope) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == b"authorization":
            scheme, _, token = value.partition(b" ")
            token = token.strip()
            if scheme.lower() != b"bearer" or not token or len(token) > 512:
                return None
            return bytes(token)
    return None


def _unauthorised_body() -> bytes:
    return orjson.dumps(
        AuthenticationError(
            "A valid site-agent credential is required: 'Authorization: Bearer <credential>'.",
            code="invalid_credential",
        ).body()
    )


class AgentAuthMiddleware:
    """Admits HTTP requests with a known credential and stores the caller in
    ``scope["state"]["caller"]``; everything else is answered 401 here."""

    def __init__(
        self, app: ASGIApp, credentials: Credentials, grants: Grants | None = None
    ) -> None:
        self.app = app
        self.credentials = credentials
        self.grants = grants
        self._body = _unauthorised_body()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        token = _bearer(scope)
        caller = self.credentials.match(token) if token is not None else None
        if caller is None and token is not None and token.startswith(GRANT_PREFIX.encode()):
            caller = self._grant(scope, token)
        if caller is None:
            await send(
                {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(self._body)).encode()),
                        (b"www-authenticate", b'Bearer realm="verbund-site"'),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": self._body})
            return
        scope.setdefault("state", {})["caller"] = caller
        await self.app(scope, receive, send)

    def _grant(self, scope: Scope, token: bytes) -> Caller | None:
        """A read grant counts only for ``GET /blobs/<its key>`` (and is used up there)."""
        path = str(scope.get("path", ""))
        if self.grants is None or scope.get("method") != "GET" or not path.startswith("/blobs/"):
            return None
        key = path[len("/blobs/") :]
        if not key or "/" in key:
            return None
        grant = self.grants.verify(token.decode("ascii", "replace"), key)
        return Caller(Role.peer, f"site:{grant.to_site}") if grant is not None else None


def caller_of(request: Request) -> Caller:
    caller = request.scope.get("state", {}).get("caller")
    assert isinstance(caller, Caller), "the auth middleware runs before every route"
    return caller


def require(request: Request, *roles: Role) -> Caller:
    """The caller, if its role may use this route; 403 otherwise."""
    caller = caller_of(request)
    if caller.role not in roles:
        allowed = " or ".join(r.value.replace("_", " ") for r in roles)
        raise PermissionDenied(f"This route is for the site's {allowed} credentials.")
    return caller
