"""The federation's status for every signed-in person: sites on a region diagram, their
state, health and load, and availability over 24 hours and 30 days."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import Response

from verbund.console._access import signed_in
from verbund.console._charts import Line, line_chart
from verbund.console._page import Console, svg
from verbund.console._regions import SiteMark, region_diagram
from verbund.console._series import day_labels, last_days
from verbund.gateway._admin import site_view
from verbund.gateway._deps import services

__all__ = ["federation_page", "state_class"]

HOUR, DAY = 3600, 86400


def state_class(state: str) -> str:
    return {"active": "ok", "draining": "warn", "maintenance": "off"}.get(state, "bad")


def _percent(values: list[float | None]) -> str:
    counted = [v for v in values if v is not None]
    return "no data" if not counted else f"{sum(counted) / len(counted):.2%}"


async def federation_page(c: Console, request: Request) -> Response:
    who = await signed_in(request, None, "")
    svc = services(request)
    now = time.time()
    sites = site_view(svc, detail=True)
    avail = svc.accounting.availability
    hour0 = int(now // HOUR * HOUR) - 23 * HOUR
    day0 = int(now // DAY * DAY) - 29 * DAY
    hourly = await avail.series(hour0, HOUR, 24)
    daily = await avail.series(day0, DAY, 30)
    last24 = await avail.last_24h()
    rows = []
    for s in sites:
        a24 = last24.get(s["name"])
        rows.append(
            s
            | {
                "state_class": state_class(s["state"]),
                "in_flight": sum(b["outstanding"] for b in s["backends"]),
                "a24": "no data" if a24 is None else f"{a24:.2%}",
                "a30": _percent(daily.get(s["name"], [])),
            }
        )
    marks = [
        SiteMark(s["name"], s["region"], s["state"], s["healthy"], last24.get(s["name"]))
        for s in sites
    ]
    hours = [datetime.fromtimestamp(hour0 + i * HOUR, UTC).strftime("%H:00") for i in range(24)]
    days = day_labels(last_days(now, 30))
    charts = [
        svg(
            line_chart(
                "Availability per hour, last 24 hours",
                hours,
                [Line(s["name"], hourly.get(s["name"], [None] * 24)) for s in sites],
                unit="%",
                y_max=1.0,
                x_label="hour (UTC)",
                y_label="probe rounds up",
            )
        ),
        svg(
            line_chart(
                "Availability per day, last 30 days",
                days,
                [Line(s["name"], daily.get(s["name"], [None] * 30)) for s in sites],
                unit="%",
                y_max=1.0,
                x_label="day (UTC)",
                y_label="probe rounds up",
            )
        ),
    ]
    return c.render(
        request,
        "federation.html",
        title="Federation",
        viewer=who.viewer,
        csrf=who.csrf,
        access_point=svc.config.gateway.name,
        access_points=len(await svc.coordination.presence.live()),
        now=datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d %H:%M"),
        sites=rows,
        diagram=svg(region_diagram(marks)),
        charts=charts,
    )
