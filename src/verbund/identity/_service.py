"""Everything about people an access point holds: its identity providers, sessions,
the people who signed in, and the role-scoped admin keys. Built once per app."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Collection

from verbund.audit import AuditLog
from verbund.config import AuthConfig
from verbund.coordination import EventBus
from verbund.errors import BadRequest
from verbund.identity._admin_keys import AdminKeyService
from verbund.identity._claims import Refusal, map_claims
from verbund.identity._oidc import OidcClient
from verbund.identity._people import PeopleService
from verbund.identity._sessions import LoginFlow, SessionStore
from verbund.store import STORE_FAILURES, Store
from verbund.tenancy import Actor

__all__ = ["IdentityService"]

log = logging.getLogger("verbund.identity")
PURGE_SECONDS = 300.0


class IdentityService:
    def __init__(
        self,
        config: AuthConfig,
        store: Store,
        audit: AuditLog,
        bus: EventBus,
        pseudonym: Callable[[str], str],
    ) -> None:
        self.config = config
        self.providers = {
            p.name: OidcClient(p, os.environ.get(p.client_secret_env) or None) for p in config.oidc
        }
        self.sessions = SessionStore(store, config.session_hours * 3600, config.login_minutes * 60)
        self.people = PeopleService(store, audit, pseudonym, bus)
        self.admin_keys = AdminKeyService(store, audit, bus)

    async def start(self) -> None:
        await self.admin_keys.load()
        await self.people.load()

    async def reload(self) -> None:
        await self.admin_keys.load()
        await self.people.load()

    async def aclose(self) -> None:
        for client in self.providers.values():
            await client.aclose()

    def provider(self, name: str | None) -> OidcClient:
        """The named provider, or the only one; 400 when there is none such."""
        if not name and len(self.providers) == 1:
            return next(iter(self.providers.values()))
        client = self.providers.get(name or "")
        if client is None:
            known = ", ".join(self.providers) or "none is configured"
            raise BadRequest(
                f"Unknown identity provider; choose one of: {known}.",
                code="unknown_provider",
                param="provider",
            )
        return client

    async def finish_login(
        self, flow: LoginFlow, code: str, redirect_uri: str, members: Collection[str]
    ) -> Actor | Refusal:
        """Exchange the code, verify the ID token, map its claims; the person's actor, or
        why they may not use this federation."""
        client = self.provider(flow.provider)
        id_token = await client.exchange(code, redirect_uri, flow.code_verifier)
        claims = await client.verify_id_token(id_token, flow.nonce)
        mapped = map_claims(client.config, claims, members)
        if isinstance(mapped, Refusal):
            log.info("sign-in refused at %s: %s", client.name, mapped.reason)
            return mapped
        return await self.people.signed_in(client.config.issuer, client.name, mapped)

    async def run_purge(self) -> None:
        """Background: expired sessions and abandoned sign-ins leave the store."""
        while True:
            with contextlib.suppress(*STORE_FAILURES):
                await self.sessions.purge()
            await asyncio.sleep(PURGE_SECONDS)
