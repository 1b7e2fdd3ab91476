"""Read grants: short-lived, single-use, file-scoped permissions another site's agent
presents to read one blob here.

When a job runs at another compliant site than the one holding its data, the data moves
agent to agent (:mod:`._transfers`). The receiving agent pulls; it authenticates at the
holding agent with a grant this agent issued to an access point for exactly that blob
and that receiving site. A grant is not a credential: the auth middleware admits it only
for ``GET /blobs/<its key>``, once, until it expires (one minute by default), and every
other route answers 401 to it. Grants are signed with a secret this agent draws at start
and never writes anywhere, so an agent's restart voids the grants it issued (the access
point asks for a new one) and no file or store at the site holds anything that would
forge one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson

__all__ = ["GRANT_PREFIX", "Grant", "Grants"]

GRANT_PREFIX = "vbgrant."
DEFAULT_TTL = 60.0


@dataclass(frozen=True, slots=True)
class Grant:
    key: str  # the blob it lets its holder read
    to_site: str  # the site whose agent it was issued for (the actor in logs and audit)
    data_class: str
    expires_at: float
    nonce: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Grants:
    def __init__(self, ttl: float = DEFAULT_TTL, clock: Callable[[], float] = time.time) -> None:
        self._secret = secrets.token_bytes(32)
        self.ttl = ttl
        self._clock = clock
        self._used: dict[str, float] = {}  # nonce -> expiry: a grant reads once

    def issue(self, key: str, to_site: str, data_class: str) -> tuple[str, Grant]:
        grant = Grant(key, to_site, data_class, self._clock() + self.ttl, secrets.token_hex(12))
        payload = _b64(
            orjson.dumps(
                {
                    "k": grant.key,
                    "to": grant.to_site,
                    "c": grant.data_class,
                    "exp": grant.expires_at,
                    "n": grant.nonce,
                }
            )
        )
        return f"{GRANT_PREFIX}{payload}.{self._sign(payload)}", grant

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._secret, payload.encode(), hashlib.sha256).digest())

    def verify(self, token: str, key: str) -> Grant | None:
        """The grant ``token`` carries if it is this agent's, for blob ``key``, unexpired
        and unused; it is used up by this call."""
        if not token.startswith(GRANT_PREFIX):
            return None
        payload, _, signature = token[len(GRANT_PREFIX) :].partition(".")
        if not hmac.compare_digest(self._sign(payload), signature):
            return None
        try:
            data = orjson.loads(_unb64(payload))
            grant = Grant(
                str(data["k"]), str(data["to"]), str(data["c"]), float(data["exp"]), str(data["n"])
            )
        except (ValueError, KeyError, TypeError, orjson.JSONDecodeError):
            return None
        now = self._clock()
        self._used = {n: exp for n, exp in self._used.items() if exp > now}
        if grant.key != key or grant.expires_at <= now or grant.nonce in self._used:
            return None
        self._used[grant.nonce] = grant.expires_at
        return grant
