"""Billable usage, summed per institution, site, model and endpoint: the input of money.

Settlement and budgets both start here, so they agree on what is charged: records with a
billable status (:data:`~verbund.accounting._prices.BILLABLE`) that a site served.
Endpoints stay generic: whatever a record's endpoint (chat, embeddings, OIP inference,
jobs), it is priced by its site and model.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select

from verbund.accounting._prices import BILLABLE
from verbund.store import Store, UsageRow


@dataclass(frozen=True, slots=True)
class UsageLine:
    institution: str
    site: str
    model: str
    endpoint: str
    requests: int
    prompt_tokens: int = 0
    completion_tokens: int = 0
    gpu_seconds: float = 0.0
    cpu_seconds: float = 0.0

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.institution, self.site, self.model, self.endpoint)


async def load_lines(
    store: Store,
    since: float,
    until: float | None = None,
    institutions: Collection[str] | None = None,
) -> list[UsageLine]:
    """Billable usage with ``since <= ts < until`` (of some institutions), sorted."""
    cols = (UsageRow.institution_id, UsageRow.site, UsageRow.model, UsageRow.endpoint)
    q = (
        select(
            *cols,
            func.count(),
            func.coalesce(func.sum(UsageRow.prompt_tokens), 0),
            func.coalesce(func.sum(UsageRow.completion_tokens), 0),
        )
        .where(UsageRow.ts >= since, UsageRow.status.in_(BILLABLE), UsageRow.site != "")
        .group_by(*cols)
        .order_by(*cols)
    )
    if until is not None:
        q = q.where(UsageRow.ts < until)
    if institutions is not None:
        q = q.where(UsageRow.institution_id.in_(sorted(institutions)))
    async with store.session() as s:
        rows = (await s.execute(q)).all()
    return [UsageLine(r[0], r[1], r[2], r[3], int(r[4]), int(r[5]), int(r[6])) for r in rows]


async def load_node_time(store: Store, since: float, until: float) -> list[dict[str, Any]]:
    """Node time the access points recorded (training jobs: CPU and GPU seconds), per
    institution, site and model, with ``since <= ts < until``: what a site's signed
    statement of its jobs' node time is compared with. Not priced here (settlement prices
    requests and tokens); listed beside the settlement."""
    cols = (UsageRow.institution_id, UsageRow.site, UsageRow.model)
    q = (
        select(
            *cols,
            func.count(),
            func.coalesce(func.sum(UsageRow.cpu_seconds), 0.0),
            func.coalesce(func.sum(UsageRow.gpu_seconds), 0.0),
        )
        .where(
            UsageRow.ts >= since,
            UsageRow.ts < until,
            UsageRow.status.in_(BILLABLE),
            UsageRow.site != "",
            (UsageRow.cpu_seconds > 0) | (UsageRow.gpu_seconds > 0),
        )
        .group_by(*cols)
        .order_by(*cols)
    )
    async with store.session() as s:
        rows = (await s.execute(q)).all()
    return [
        {
            "institution": r[0],
            "site": r[1],
            "model": r[2],
            "jobs": int(r[3]),
            "cpu_seconds": round(float(r[4]), 3),
            "gpu_seconds": round(float(r[5]), 3),
        }
        for r in rows
    ]
