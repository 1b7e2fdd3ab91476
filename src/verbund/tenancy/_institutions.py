"""Member institutions: from the config and the admin API, kept in memory for the hot path."""

from __future__ import annotations

import contextlib
import time
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select

from verbund.audit import AuditLog, Who
from verbund.config import InstitutionConfig
from verbund.coordination import EventBus, LocalBus
from verbund.errors import BadRequest, NotFound
from verbund.store import STORE_FAILURES, InstitutionRow, Store

_FIELDS = (
    "name",
    "home_region",
    "default_data_class",
    "allowed_sites",
    "allowed_regions",
    "allowed_jurisdictions",
    "required_certifications",
    "requests_per_minute",
    "tokens_per_minute",
    "tokens_per_month",
    "max_concurrent_requests",
    "partner_site",
    "budget_tokens_per_month",
    "budget_per_month",
    "budget_hard_stop",
    "file_expires_after",
    "file_max_expires_after",
    "store_responses",
    "require_receipts",
    "person_requests_per_minute",
    "person_tokens_per_minute",
)


def _to_row_values(inst: InstitutionConfig) -> dict[str, object]:
    data = inst.model_dump(mode="json")
    return {f: data[f] for f in _FIELDS}


def _from_row(row: InstitutionRow) -> InstitutionConfig:
    return InstitutionConfig.model_validate({"id": row.id, **{f: getattr(row, f) for f in _FIELDS}})


class InstitutionRegistry:
    def __init__(self, store: Store, audit: AuditLog, bus: EventBus | None = None) -> None:
        self._store = store
        self._audit = audit
        self._bus = bus or LocalBus()
        self._by_id: dict[str, InstitutionConfig] = {}

    def get(self, institution_id: str) -> InstitutionConfig | None:
        return self._by_id.get(institution_id)

    def all(self) -> list[InstitutionConfig]:
        return sorted(self._by_id.values(), key=lambda i: i.id)

    async def sync_from_config(self, configured: list[InstitutionConfig]) -> None:
        """The config is authoritative for the institutions it names; others come from the
        store. Several workers and access points start at once: what is read here is
        read under the audit chain's lock, so only one of them creates or updates."""
        async with self._store.session() as s, s.begin():
            await self._audit.serialise(s)
            existing = {r.id: r for r in (await s.execute(select(InstitutionRow))).scalars()}
            for inst in configured:
                values = _to_row_values(inst)
                row = existing.get(inst.id)
                if row is None:
                    s.add(
                        InstitutionRow(
                            id=inst.id, source="config", created_at=time.time(), **values
                        )
                    )
                    await self._audit.append(
                        s, actor="config", action="institution.create", target=inst.id, after=values
                    )
                else:
                    before = {f: getattr(row, f) for f in _FIELDS}
                    if before != values:
                        for k, v in values.items():
                            setattr(row, k, v)
                        await self._audit.append(
                            s,
                            actor="config",
                            action="institution.update",
                            target=inst.id,
                            before=before,
                            after=values,
                        )
        await self.load()

    async def load(self) -> None:
        async with self._store.session() as s:
            rows = (await s.execute(select(InstitutionRow))).scalars().all()
        self._by_id = {r.id: _from_row(r) for r in rows}

    async def create(self, inst: InstitutionConfig, actor: Who) -> InstitutionConfig:
        async with self._store.session() as s, s.begin():
            if await s.get(InstitutionRow, inst.id) is not None:
                raise BadRequest(
                    f"Institution '{inst.id}' exists already.", param="id", code="already_exists"
                )
            values = _to_row_values(inst)
            s.add(InstitutionRow(id=inst.id, source="admin", created_at=time.time(), **values))
            await self._audit.append(
                s, actor=actor, action="institution.create", target=inst.id, after=values
            )
        self._by_id[inst.id] = inst
        await self._bus.publish({"type": "institution.changed", "id": inst.id})
        return inst

    async def update(
        self, institution_id: str, changes: dict[str, Any], actor: Who
    ) -> InstitutionConfig:
        """Change policy or quota fields of an institution (validated like the config)."""
        current = self._by_id.get(institution_id)
        if current is None:
            raise NotFound(f"No institution '{institution_id}'.", param="id")
        unknown = sorted(set(changes) - set(_FIELDS))
        if unknown:
            raise BadRequest(f"Unknown field(s): {', '.join(unknown)}.", param=unknown[0])
        try:
            updated = InstitutionConfig.model_validate({**current.model_dump(), **changes})
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"])
            raise BadRequest(f"{field}: {err['msg']}", param=field) from None
        async with self._store.session() as s, s.begin():
            row = await s.get(InstitutionRow, institution_id)
            if row is None:
                raise NotFound(f"No institution '{institution_id}'.", param="id")
            before = {f: getattr(row, f) for f in _FIELDS}
            for k, v in _to_row_values(updated).items():
                setattr(row, k, v)
            await self._audit.append(
                s,
                actor=actor,
                action="institution.update",
                target=institution_id,
                before=before,
                after=_to_row_values(updated),
            )
        self._by_id[institution_id] = updated
        await self._bus.publish({"type": "institution.changed", "id": institution_id})
        return updated

    async def on_event(self, event: dict[str, Any]) -> None:
        if event.get("type") == "institution.changed":
            with contextlib.suppress(*STORE_FAILURES):
                await self.load()
