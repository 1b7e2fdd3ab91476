"""Admin routes for money: the monthly settlement between partners and budget status."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from verbund.accounting import load_lines, load_node_time, money, parse_month, settle
from verbund.errors import BadRequest, StoreUnavailable
from verbund.gateway._deps import query_param, require, services
from verbund.store import RETRY_AFTER_SECONDS, STORE_FAILURES
from verbund.tenancy import Permission

_read_settlement = require(Permission.settlement_read)
_read_budgets = require(Permission.budgets_read, query_param("institution"))


async def settlement(request: Request) -> Response:
    """``GET /admin/settlement?month=YYYY-MM``: the statement, recomputed from usage records."""
    await _read_settlement(request)
    svc = services(request)
    month = request.query_params.get("month", "")
    try:
        start, end = parse_month(month)
    except ValueError:
        raise BadRequest("'month' must be given as YYYY-MM, e.g. 2025-01.", param="month") from None
    try:
        await svc.accounting.spool.flush()
        lines = await load_lines(svc.store, start, end)
        node_time = await load_node_time(svc.store, start, end)
    except STORE_FAILURES:
        raise StoreUnavailable(
            "The settlement needs the store, which is unreachable.",
            headers={"retry-after": str(RETRY_AFTER_SECONDS)},
        ) from None
    data = settle(month, lines, svc.federation.site_configs(), svc.institutions.all())
    data["node_time"] = node_time  # jobs' CPU/GPU seconds, for the sites' statements
    return JSONResponse(data)


async def budgets(request: Request) -> Response:
    """``GET /admin/budgets``: month-to-date spend of institutions that have a budget."""
    await _read_budgets(request)
    svc = services(request)
    only = request.query_params.get("institution") or None
    data: list[dict[str, Any]] = []
    for inst in svc.institutions.all():
        if only is not None and inst.id != only:
            continue
        if not (inst.budget_tokens_per_month or inst.budget_per_month):
            continue
        spend = svc.accounting.budgets.spend(inst.id)
        used = svc.accounting.budgets.used(inst)
        data.append(
            {
                "institution": inst.id,
                "tokens": spend.tokens,
                "cost": str(money(spend.cost)),
                "budget_tokens_per_month": inst.budget_tokens_per_month,
                "budget_per_month": str(inst.budget_per_month),
                "budget_hard_stop": inst.budget_hard_stop,
                "used": None if used is None else round(used, 4),
            }
        )
    return JSONResponse({"currency": svc.accounting.prices.currency, "data": data})
