"""An institution's page for its admins (and the federation's auditors): usage by person,
key and model, the month's budget and its burn-down, and the institution's keys."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from verbund.accounting import BILLABLE, month_of, parse_month, usage_report
from verbund.config import InstitutionConfig
from verbund.console._access import signed_in
from verbund.console._charts import bar_chart, line_chart
from verbund.console._me import usage_charts
from verbund.console._page import Console, svg
from verbund.console._series import burn_down, ranking
from verbund.errors import NotFound
from verbund.gateway._deps import services
from verbund.gateway._services import Services
from verbund.tenancy import Permission, can

__all__ = ["budget_view", "institution_page"]

DAYS = 30


def _month_days(month: str) -> list[str]:
    start, end = parse_month(month)
    n = round((end - start) / 86400)
    return [datetime.fromtimestamp(start + i * 86400, UTC).strftime("%Y-%m-%d") for i in range(n)]


async def budget_view(svc: Services, inst: InstitutionConfig, now: float) -> dict[str, Any] | None:
    """The month's spend against the budget, and the burn-down chart; None without one."""
    if not (inst.budget_tokens_per_month or inst.budget_per_month):
        return None
    month = month_of(now)
    start, end = parse_month(month)
    rows = await usage_report(svc.store, ["day", "site", "model", "status"], start, end, inst.id)
    book = svc.accounting.prices
    tokens: dict[str, float] = {}
    money: dict[str, Decimal] = {}
    for r in rows:
        if r["status"] not in BILLABLE or not r["site"]:
            continue
        tokens[r["day"]] = tokens.get(r["day"], 0.0) + float(r["total_tokens"])
        cost = book.cost(
            r["site"],
            r["model"],
            requests=int(r["requests"]),
            prompt_tokens=int(r["prompt_tokens"]),
            completion_tokens=int(r["completion_tokens"]),
        )
        money[r["day"]] = money.get(r["day"], Decimal(0)) + cost
    days = _month_days(month)
    today = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")
    labels = [d[8:].lstrip("0") for d in days]
    if inst.budget_per_month:
        budget, unit, daily = float(inst.budget_per_month), svc.config.currency, money
        kind = f"money ({svc.config.currency})"
    else:
        budget, unit, daily = float(inst.budget_tokens_per_month), "", tokens  # type: ignore[assignment]
        kind = "tokens"
    chart = line_chart(
        f"Budget burn-down {month}: {kind} left",
        labels,
        burn_down(daily, days, budget, today),
        unit=unit,
        x_label=f"day of {month} (UTC)",
        y_label=f"{kind} left",
        reference=("budget", budget),
    )
    spend = svc.accounting.budgets.spend(inst.id)
    used = svc.accounting.budgets.used(inst)
    return {
        "used": "—" if used is None else f"{used:.1%}",
        "tokens": spend.tokens,
        "cost": f"{spend.cost:.2f}",
        "token_budget": inst.budget_tokens_per_month,
        "money_budget": f"{inst.budget_per_month:.2f}" if inst.budget_per_month else "",
        "hard_stop": inst.budget_hard_stop,
        "chart": svg(chart),
    }


async def institution_page(c: Console, request: Request) -> Response:
    who = await signed_in(request, Permission.usage_read, "institution")
    svc = services(request)
    # its own (an institution admin) or every one (an auditor, a federation admin)
    choices = [i.id for i in svc.institutions.all() if can(who.actor, Permission.usage_read, i.id)]
    wanted = request.query_params.get("institution") or (choices[0] if choices else "")
    inst = svc.institutions.get(wanted)
    if inst is None or wanted not in choices:
        raise NotFound(f"No institution '{wanted}' for you here.", param="institution")
    now = time.time()
    await svc.accounting.spool.flush()
    rows = await usage_report(
        svc.store, ["day", "model", "key", "person"], now - DAYS * 86400, None, inst.id
    )
    key_rows = await svc.keys.list(inst.id)
    key_names = {k.id: k.name or k.id for k in key_rows}
    people = {p.id: p.display_name or p.id[:12] for p in await svc.identity.people.list(inst.id)}
    by_key: dict[str, list[int]] = {}
    for r in rows:
        sums = by_key.setdefault(r["key"], [0, 0])
        sums[0] += int(r["requests"])
        sums[1] += int(r["total_tokens"])
    person_rows = [r | {"person": r["person"] or "(institution keys)"} for r in rows]
    charts = [
        *usage_charts(rows, now, DAYS, inst.id),
        svg(bar_chart(f"Tokens by person ({inst.id})",
                      ranking(person_rows, "person", "total_tokens", names=people),
                      value_label="tokens")),
        svg(bar_chart(f"Tokens by key ({inst.id})",
                      ranking(rows, "key", "total_tokens", names=key_names),
                      value_label="tokens")),
    ]  # fmt: skip
    keys = [
        {
            "id": k.id,
            "name": k.name,
            "owner": people.get(k.person_id or "", k.person_id or ""),
            "created": datetime.fromtimestamp(k.created_at, UTC).strftime("%Y-%m-%d"),
            "revoked": k.revoked_at is not None,
            "requests": by_key.get(k.id, [0, 0])[0],
            "tokens": by_key.get(k.id, [0, 0])[1],
        }
        for k in key_rows
    ]
    return c.render(
        request,
        "institution.html",
        title=f"Institution {inst.id}",
        institution_name=inst.name,
        viewer=who.viewer,
        csrf=who.csrf,
        institution=inst.id,
        institutions=choices,
        days=DAYS,
        total_requests=sum(int(r["requests"]) for r in rows),
        total_tokens=sum(int(r["total_tokens"]) for r in rows),
        month=month_of(now),
        currency=svc.config.currency,
        budget=await budget_view(svc, inst, now),
        charts=charts,
        keys=keys,
    )
