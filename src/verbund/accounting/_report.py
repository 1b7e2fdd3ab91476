"""Usage reports: grouped sums over usage records, by any mix of dimensions and periods.

``day`` and ``month`` bucket by UTC calendar day (``YYYY-MM-DD``) and month (``YYYY-MM``).
Every endpoint (chat, embeddings, OIP inference, jobs) is a value of ``endpoint``, so new
kinds of usage appear in reports without changes here. Node time of on-demand instances
is the sites' cost, not an institution's usage: :func:`node_time_report` sums it apart.
"""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy import ColumnElement, case, func, select
from sqlalchemy.orm import InstrumentedAttribute

from verbund.accounting._period import UtcDay, UtcMonth
from verbund.store import NodeTimeRow, Store, UsageRow

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


async def node_time_report(
    store: Store, since: float | None = None, until: float | None = None
) -> list[dict[str, Any]]:
    """Node time the sites' on-demand instances held (CPU and GPU seconds, idle included)
    per site and model, in the hours from ``since`` until ``until``: what serving cost the
    sites, next to the tokens the same report counts. An hour counts whole if it starts
    in the period (the agents count in UTC hours)."""
    q = select(
        NodeTimeRow.site,
        NodeTimeRow.model,
        func.coalesce(func.sum(NodeTimeRow.cpu_seconds), 0.0).label("cpu_seconds"),
        func.coalesce(func.sum(NodeTimeRow.gpu_seconds), 0.0).label("gpu_seconds"),
        func.count().label("hours"),
    )
    if since is not None:
        q = q.where(NodeTimeRow.hour >= math.floor(since / 3600) * 3600)
    if until is not None:
        q = q.where(NodeTimeRow.hour < until)
    q = q.group_by(NodeTimeRow.site, NodeTimeRow.model).order_by(
        NodeTimeRow.site, NodeTimeRow.model
    )
    async with store.session() as s:
        result = (await s.execute(q)).mappings().all()
    return [
        {
            "site": r["site"],
            "model": r["model"],
            "cpu_seconds": round(float(r["cpu_seconds"]), 3),
            "gpu_seconds": round(float(r["gpu_seconds"]), 3),
            "hours": int(r["hours"]),
        }
        for r in result
    ]
