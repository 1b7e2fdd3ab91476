"""People who have signed in: their pseudonymous subject, institution, role, and the
per-person quotas an institution admin sets within the institution's own.

A person's id is a keyed hash of the provider's issuer and subject (the federation's
pseudonym key), so neither the store nor the usage records hold the provider's own
identifier; the same person gets the same id at every access point.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from verbund.audit import AuditLog, Who
from verbund.coordination import EventBus, LocalBus
from verbund.errors import NotFound
from verbund.identity._claims import Identity
from verbund.store import STORE_FAILURES, PersonRow, Store
from verbund.tenancy import Actor, PersonQuota

__all__ = ["PeopleService"]


class PeopleService:
    def __init__(
        self,
        store: Store,
        audit: AuditLog,
        pseudonym: Callable[[str], str],
        bus: EventBus | None = None,
    ) -> None:
        self._store = store
        self._audit = audit
        self._pseudonym = pseudonym
        self._bus = bus or LocalBus()
        self._quotas: dict[str, PersonQuota] = {}

    def subject(self, issuer: str, sub: str) -> str:
        return self._pseudonym(f"{issuer}\x00{sub}")

    async def load(self) -> None:
        """Per-person quotas into memory (the request path reads them there)."""
        async with self._store.session() as s:
            rows = (
                await s.execute(
                    select(PersonRow).where(
                        (PersonRow.requests_per_minute > 0) | (PersonRow.tokens_per_minute > 0)
                    )
                )
            ).scalars()
            self._quotas = {
                r.id: PersonQuota(r.requests_per_minute, r.tokens_per_minute) for r in rows
            }

    def quota(self, person_id: str) -> PersonQuota | None:
        return self._quotas.get(person_id)

    async def signed_in(self, issuer: str, provider: str, identity: Identity) -> Actor:
        """Record the sign-in; a new person or a changed role is audited."""
        person_id = self.subject(issuer, identity.subject)
        actor = Actor("person", person_id, identity.role, identity.institution, identity.site)
        now = time.time()
        async with self._store.session() as s, s.begin():
            row = await s.get(PersonRow, person_id)
            before = None if row is None else _scope(row.role, row.institution_id, row.site)
            after = _scope(identity.role.value, identity.institution, identity.site)
            if row is None:
                row = PersonRow(
                    id=person_id,
                    created_at=now,
                    requests_per_minute=0,
                    tokens_per_minute=0,
                )
                s.add(row)
            row.role = identity.role.value
            row.institution_id = identity.institution
            row.site = identity.site
            row.display_name = identity.display_name
            row.provider = provider
            row.last_login_at = now
            if before != after:
                await self._audit.append(
                    s,
                    actor=actor,
                    action="person.role",
                    target=person_id,
                    before=before,
                    after=after,
                )
        return actor

    async def get(self, person_id: str) -> PersonRow | None:
        async with self._store.session() as s:
            return await s.get(PersonRow, person_id)

    async def list(self, institution_id: str | None) -> list[PersonRow]:
        async with self._store.session() as s:
            q = select(PersonRow).order_by(PersonRow.created_at)
            if institution_id is not None:
                q = q.where(PersonRow.institution_id == institution_id)
            return list((await s.execute(q)).scalars())

    async def set_quota(
        self, person_id: str, institution_id: str | None, quota: PersonQuota, actor: Who
    ) -> PersonRow:
        async with self._store.session() as s, s.begin():
            row = await s.get(PersonRow, person_id)
            if row is None or (institution_id is not None and row.institution_id != institution_id):
                raise NotFound(f"No person with id '{person_id}'.", param="id")
            before = PersonQuota(row.requests_per_minute, row.tokens_per_minute)
            row.requests_per_minute = quota.requests_per_minute
            row.tokens_per_minute = quota.tokens_per_minute
            await self._audit.append(
                s,
                actor=actor,
                action="person.quota",
                target=person_id,
                before=_quota_dict(before),
                after=_quota_dict(quota),
            )
        self._quotas[person_id] = quota
        await self._bus.publish({"type": "person.changed"})
        return row

    async def on_event(self, event: dict[str, Any]) -> None:
        if event.get("type") == "person.changed":
            with contextlib.suppress(*STORE_FAILURES):  # the periodic resync repairs it
                await self.load()


def _scope(role: str, institution: str | None, site: str | None) -> dict[str, str | None]:
    return {"role": role, "institution": institution, "site": site}


def _quota_dict(q: PersonQuota) -> dict[str, int]:
    return {"requests_per_minute": q.requests_per_minute, "tokens_per_minute": q.tokens_per_minute}
