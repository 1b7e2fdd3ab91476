"""The auditor's page: is the audit chain intact (or where is it first broken), its export
as JSON lines (the format ``verbund audit verify --file`` checks offline), and the
monthly settlement statement between partner sites."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from verbund.accounting import load_lines, month_of, parse_month, settle
from verbund.console._access import signed_in
from verbund.console._charts import bar_chart
from verbund.console._page import Console, svg
from verbund.errors import BadRequest
from verbund.gateway._admin import audit_entry
from verbund.gateway._deps import services
from verbund.gateway._services import Services
from verbund.tenancy import Permission

__all__ = ["audit_export", "audit_page", "settlement_json"]

SHOWN = 50
PAGE = 1000


def _month(request: Request) -> str:
    month = request.query_params.get("month") or month_of(time.time())
    try:
        parse_month(month)
    except ValueError:
        raise BadRequest("'month' must be given as YYYY-MM, e.g. 2025-01.", param="month") from None
    return month


async def _statement(svc: Services, month: str) -> dict[str, Any]:
    start, end = parse_month(month)
    await svc.accounting.spool.flush()
    lines = await load_lines(svc.store, start, end)
    return settle(month, lines, list(svc.config.sites), svc.institutions.all())


async def audit_page(c: Console, request: Request) -> Response:
    who = await signed_in(request, Permission.audit_read, "")
    who.need(Permission.settlement_read, None)
    svc = services(request)
    chain = await svc.audit.verify()
    # the latest entries: skip to the tail by sequence number
    head = await svc.audit.entries(limit=1, after_seq=max(0, chain.entries - SHOWN))
    first = head[0].seq - 1 if head else 0
    rows = await svc.audit.entries(limit=SHOWN, after_seq=first)
    entries = [
        {
            "seq": r.seq,
            "ts": datetime.fromtimestamp(r.ts, UTC).strftime("%Y-%m-%d %H:%M:%S"),
            "actor": r.actor,
            "role": r.role or "",
            "action": r.action,
            "target": r.target,
        }
        for r in reversed(rows)
    ]
    month = _month(request)
    statement = await _statement(svc, month)
    chart = bar_chart(
        f"Value delivered per site, {month} ({statement['currency']})",
        [(s["site"], float(Decimal(s["delivered"]))) for s in statement["sites"]],
        unit=statement["currency"],
        value_label=f"value at the sites' prices ({statement['currency']})",
    )
    return c.render(
        request,
        "audit.html",
        title="Audit",
        viewer=who.viewer,
        csrf=who.csrf,
        chain=chain,
        entries=entries,
        month=month,
        statement=statement,
        chart=svg(chart),
    )


async def audit_export(c: Console, request: Request) -> Response:
    await signed_in(request, Permission.audit_read, "")
    svc = services(request)

    async def lines() -> AsyncIterator[bytes]:
        after = 0
        while rows := await svc.audit.entries(limit=PAGE, after_seq=after):
            for r in rows:
                yield orjson.dumps(audit_entry(r), option=orjson.OPT_SORT_KEYS) + b"\n"
            after = rows[-1].seq

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return StreamingResponse(
        lines(),
        media_type="application/x-ndjson",
        headers={"content-disposition": f'attachment; filename="verbund-audit-{stamp}.jsonl"'},
    )


async def settlement_json(c: Console, request: Request) -> Response:
    await signed_in(request, Permission.settlement_read, "")
    return JSONResponse(await _statement(services(request), _month(request)))
