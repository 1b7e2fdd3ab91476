"""A person's own pages: API keys (create, shown once; revoke), usage, the model catalogue."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from verbund.accounting import usage_report
from verbund.config import DataClass, InstitutionConfig
from verbund.console._access import Access, signed_in
from verbund.console._charts import bar_chart, stacked_bar_chart
from verbund.console._page import Console, svg
from verbund.console._series import day_labels, last_days, ranking, stacked_by_day
from verbund.errors import PermissionDenied
from verbund.gateway._catalogue import catalogue
from verbund.gateway._deps import services
from verbund.policy import RequestPolicy
from verbund.tenancy import Permission

__all__ = ["keys_page", "models_page", "usage_charts", "usage_page"]

USAGE_DAYS = 14


def _date(ts: float | None) -> str:
    return "" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")


async def keys_page(c: Console, request: Request) -> Response:
    """The person's keys; creating and revoking go from the page's script to the
    self-service key API (``/v1/me/keys``) with the session's CSRF token, so the page
    and any other client pass the same checks."""
    who = await signed_in(request, Permission.own_keys, "institution")
    svc = services(request)
    ceiling = _institution(request, who).default_data_class
    rows = await svc.keys.list(who.actor.institution, person_id=who.actor.id)
    keys = [
        {
            "id": r.id,
            "name": r.name,
            "prefix": r.prefix,
            "data_class": r.data_class,
            "created": _date(r.created_at),
            "expires": _date(r.expires_at),
            "revoked": r.revoked_at is not None,
        }
        for r in sorted(rows, key=lambda r: -r.created_at)
    ]
    return c.render(
        request,
        "keys.html",
        title="My keys",
        viewer=who.viewer,
        csrf=who.csrf,
        keys=keys,
        data_classes=[d.value for d in DataClass if d.rank <= ceiling.rank],
        default_class=ceiling.value,
        api_base=str(request.base_url).rstrip("/") + "/v1",
    )


def _institution(request: Request, who: Access) -> InstitutionConfig:
    inst = services(request).institutions.get(who.actor.institution or "")
    if inst is None:
        raise PermissionDenied("Your institution is no longer a member of the federation.")
    return inst


def usage_charts(rows: list[dict[str, Any]], now: float, days: int, who: str) -> list[Any]:
    """Tokens and requests by day, split by model, and tokens by model: the usage page's
    charts, for a person or an institution."""
    span = last_days(now, days)
    labels = day_labels(span)
    return [
        svg(
            stacked_bar_chart(
                f"Tokens by day and model ({who})",
                labels,
                stacked_by_day(rows, span, "model", "total_tokens"),
                x_label="day (UTC)",
                y_label="tokens",
            )
        ),
        svg(
            stacked_bar_chart(
                f"Requests by day and model ({who})",
                labels,
                stacked_by_day(rows, span, "model", "requests"),
                x_label="day (UTC)",
                y_label="requests",
            )
        ),
        svg(bar_chart(f"Tokens by model ({who})", ranking(rows, "model", "total_tokens"),
                      value_label="tokens")),
    ]  # fmt: skip


async def usage_page(c: Console, request: Request) -> Response:
    who = await signed_in(request, Permission.own_keys, "institution")
    svc = services(request)
    now = time.time()
    since = now - USAGE_DAYS * 86400
    await svc.accounting.spool.flush()
    rows = await usage_report(
        svc.store, ["day", "model"], since, None, who.actor.institution, person_id=who.actor.id
    )
    return c.render(
        request,
        "usage.html",
        title="My usage",
        viewer=who.viewer,
        csrf=who.csrf,
        heading="My usage",
        subtitle="Requests made with your own keys",
        days=USAGE_DAYS,
        total_requests=sum(int(r["requests"]) for r in rows),
        total_tokens=sum(int(r["total_tokens"]) for r in rows),
        charts=usage_charts(rows, now, USAGE_DAYS, "you"),
        table=sorted(rows, key=lambda r: (r["day"], r["model"]), reverse=True),
    )


def _status(entry: dict[str, Any]) -> tuple[str, str]:
    v = entry["verbund"]
    # the catalogue's status once it has one; until then, whether a site can serve now
    status = str(v.get("status") or ("ready" if v["available"] else "unavailable"))
    return status, {"ready": "ok", "starting": "warn", "stopped": "off"}.get(status, "bad")


async def models_page(c: Console, request: Request) -> Response:
    who = await signed_in(request, None, "")
    svc = services(request)
    inst = svc.institutions.get(who.actor.institution or "")
    if inst is not None:
        policy = RequestPolicy.for_institution(inst, inst.default_data_class)
        scope = f"The models {inst.id} may use, at its default data class."
    else:
        policy = RequestPolicy(data_class=DataClass.public)
        scope = "Every model of the federation."
    models = []
    for e in catalogue(svc.federation, policy, created=int(svc.started)):
        status, css = _status(e)
        v = e["verbund"]
        models.append(
            {
                "id": e["id"],
                "description": v.get("description") or "",
                "kind": v["kind"],
                "status": status,
                "status_class": css,
                "data_classes": v["data_classes"],
                "license": v.get("license"),
                "sites": v["sites"],
            }
        )
    return c.render(
        request,
        "models.html",
        title="Models",
        viewer=who.viewer,
        csrf=who.csrf,
        models=models,
        scope=scope,
    )
