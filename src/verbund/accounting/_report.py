"""Usage reports: grouped sums over usage records, by any mix of dimensions and periods.

``day`` and ``month`` bucket by UTC calendar day (``YYYY-MM-DD``) and month (``YYYY-MM``).
Every endpoint (chat, embeddings, OIP inference, jobs) is a value of ``endpoint``, so new
kinds of usage appear in reports without changes here.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, case, func, select
from sqlalchemy.orm import InstrumentedAttribute

from verbund.accounting._period import UtcDay, UtcMonth
from verbund.store import Store, UsageRow

GROUPS: dict[str, ColumnElement[Any] | InstrumentedAttribute[Any]] = {
    "month": UtcMonth(UsageRow.ts),
    "day": UtcDay(UsageRow.ts),
    "institution": UsageRow.institution_id,
    "site": UsageRow.site,
    "model": UsageRow.model,
    "backend": UsageRow.backend,
    "key": UsageRow.key_id,
    "person": UsageRow.person_id,
    "endpoint": UsageRow.endpoint,
    "status": UsageRow.status,
    "access_point": UsageRow.access_point,
}


async def usage_report(
    store: Store,
    group_by: list[str],
    since: float | None = None,
    until: float | None = None,
    institution_id: str | None = None,
    person_id: str | None = None,
) -> list[dict[str, Any]]:
    unknown = [g for g in group_by if g not in GROUPS]
    if unknown:
        raise ValueError(f"unknown group(s): {', '.join(unknown)}; use {', '.join(GROUPS)}")
    cols = [GROUPS[g].label(g) for g in group_by]
    q = select(
        *cols,
        func.count().label("requests"),
        func.sum(case((UsageRow.status == "ok", 0), else_=1)).label("failed"),
        func.coalesce(func.sum(UsageRow.prompt_tokens), 0).label("prompt_tokens"),
        func.coalesce(func.sum(UsageRow.completion_tokens), 0).label("completion_tokens"),
        func.coalesce(func.sum(UsageRow.cpu_seconds), 0.0).label("cpu_seconds"),
        func.coalesce(func.sum(UsageRow.gpu_seconds), 0.0).label("gpu_seconds"),
        func.coalesce(func.sum(UsageRow.request_bytes), 0).label("request_bytes"),
        func.coalesce(func.sum(UsageRow.response_bytes), 0).label("response_bytes"),
    )
    if since is not None:
        q = q.where(UsageRow.ts >= since)
    if until is not None:
        q = q.where(UsageRow.ts < until)
    if institution_id is not None:
        q = q.where(UsageRow.institution_id == institution_id)
    if person_id is not None:
        q = q.where(UsageRow.person_id == person_id)
    if cols:
        q = q.group_by(*cols).order_by(*cols)
    async with store.session() as s:
        result = (await s.execute(q)).mappings().all()
    rows = []
    for r in result:
        row = dict(r)
        row["failed"] = int(row["failed"] or 0)
        row["total_tokens"] = int(row["prompt_tokens"]) + int(row["completion_tokens"])
        row["cpu_seconds"] = round(float(row["cpu_seconds"]), 3)
        row["gpu_seconds"] = round(float(row["gpu_seconds"]), 3)
        row["request_bytes"] = int(row["request_bytes"])
        row["response_bytes"] = int(row["response_bytes"])
        rows.append(row)
    return rows
