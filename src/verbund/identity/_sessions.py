"""Server-side sessions and the sign-ins that lead to them, kept in the store.

The browser holds only a random session id in an ``HttpOnly`` cookie; the store keeps
its SHA-256 (a leaked table opens no session), the actor it stands for, its expiry and
its CSRF token. Every sign-in creates a new id, whatever cookie the browser brought
(no session fixation), and signing out deletes the row. A sign-in under way is a row
keyed by the hash of its ``state``; the callback deletes it as it reads it, so a
replayed ``state`` finds nothing.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import delete

from verbund.store import LoginFlowRow, SessionRow, Store
from verbund.tenancy import Actor, Role

__all__ = ["LoginFlow", "Session", "SessionStore"]


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Session:
    actor: Actor
    csrf: str
    expires_at: float
    provider: str


@dataclass(frozen=True, slots=True)
class LoginFlow:
    provider: str
    nonce: str
    code_verifier: str
    return_to: str


class SessionStore:
    def __init__(self, store: Store, session_seconds: float, login_seconds: float) -> None:
        self._store = store
        self.session_seconds = session_seconds
        self._login_seconds = login_seconds

    async def begin_login(self, provider: str, return_to: str) -> tuple[str, LoginFlow]:
        """A new sign-in: its ``state`` (for the provider's redirect) and what the callback
        checks (``nonce``, the PKCE verifier)."""
        state = secrets.token_urlsafe(32)
        flow = LoginFlow(provider, secrets.token_urlsafe(32), secrets.token_urlsafe(48), return_to)
        now = time.time()
        async with self._store.session() as s, s.begin():
            s.add(
                LoginFlowRow(
                    id=_digest(state),
                    provider=flow.provider,
                    nonce=flow.nonce,
                    code_verifier=flow.code_verifier,
                    return_to=flow.return_to,
                    created_at=now,
                    expires_at=now + self._login_seconds,
                )
            )
        return state, flow

    async def take_login(self, state: str) -> LoginFlow | None:
        """The sign-in ``state`` names, removed so it works once; None if unknown,
        used already or expired."""
        async with self._store.session() as s, s.begin():
            row = await s.get(LoginFlowRow, _digest(state))
            if row is None:
                return None
            await s.delete(row)
        if row.expires_at < time.time():
            return None
        return LoginFlow(row.provider, row.nonce, row.code_verifier, row.return_to)

    async def create(self, actor: Actor, provider: str) -> tuple[str, Session]:
        """A new session for ``actor``; returns the cookie's value (shown only here)."""
        token = secrets.token_urlsafe(32)
        now = time.time()
        session = Session(actor, secrets.token_urlsafe(32), now + self.session_seconds, provider)
        async with self._store.session() as s, s.begin():
            s.add(
                SessionRow(
                    id=_digest(token),
                    person_id=actor.id,
                    role=actor.role.value,
                    institution_id=actor.institution,
                    site=actor.site,
                    provider=provider,
                    csrf=session.csrf,
                    created_at=now,
                    expires_at=session.expires_at,
                )
            )
        return token, session

    async def get(self, token: str) -> Session | None:
        """The live session of a cookie's value; None when unknown or expired."""
        if not token or len(token) > 128:
            return None
        async with self._store.session() as s:
            row = await s.get(SessionRow, _digest(token))
        if row is None or row.expires_at <= time.time():
            return None
        actor = Actor("person", row.person_id, Role(row.role), row.institution_id, row.site)
        return Session(actor, row.csrf, row.expires_at, row.provider)

    async def end(self, token: str) -> None:
        async with self._store.session() as s, s.begin():
            await s.execute(delete(SessionRow).where(SessionRow.id == _digest(token)))

    async def purge(self) -> None:
        """Drop expired sessions and abandoned sign-ins."""
        now = time.time()
        async with self._store.session() as s, s.begin():
            await s.execute(delete(SessionRow).where(SessionRow.expires_at <= now))
            await s.execute(delete(LoginFlowRow).where(LoginFlowRow.expires_at <= now))
