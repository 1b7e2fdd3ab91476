"""Operations routes: liveness, readiness and the public status page."""

from __future__ import annotations

import html
import time

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from verbund.gateway._admin import site_view
from verbund.gateway._deps import services


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    svc = services(request)
    if svc.drain.draining:
        # the load balancer's cue to send no more: this access point is leaving service
        return JSONResponse({"ready": False, "draining": True}, status_code=503)
    now = time.monotonic()
    store_ok = await svc.store.ping()
    backends_up = sum(
        1
        for b in svc.federation.backends.values()
        if b.site.accepts_new_requests and b.available(now)
    )
    degraded = svc.degraded
    if not store_ok:
        degraded.append("store")
    # Without the store, cached keys and routing still work: stay in the load balancer's
    # rotation, say so, and let requests that need the store fail closed themselves.
    ready = backends_up > 0 and (store_ok or svc.keys.cached > 0)
    return JSONResponse(
        {
            "ready": ready,
            "store": store_ok,
            "backends_available": backends_up,
            "degraded": degraded,
            # this host's clock minus the store's and Redis's (leases, quota windows and
            # budget months go by those); None until measured
            "clock_skew_seconds": {
                k: None if v is None else round(v, 3) for k, v in svc.clock_skew.items()
            },
        },
        status_code=200 if ready else 503,
    )


async def status(request: Request) -> Response:
    svc = services(request)
    sites = site_view(svc, detail=False)
    availability = await svc.accounting.availability.last_24h()
    for site in sites:
        a = availability.get(site["name"])
        site["availability_24h"] = None if a is None else round(a, 5)
    body = {
        "access_point": svc.config.gateway.name,
        "access_points": [
            {"name": a["name"], "up_since": int(a["started"])}
            for a in await svc.coordination.presence.live()
        ],
        "time": int(time.time()),
        "sites": sites,
        "models": sorted(svc.federation.models),
    }
    if "text/html" in request.headers.get("accept", ""):
        return HTMLResponse(_status_html(body["access_point"], sites))
    return JSONResponse(body)


_ROW = "<tr>" + "<td>{}</td>" * 5 + "<td class={}>{}</td><td>{}</td><td>{}</td></tr>"


def _percent(value: object) -> str:
    return "no data" if not isinstance(value, float | int) else f"{value * 100:.2f} %"


def _status_html(access_point: object, sites: list[dict[str, object]]) -> str:
    rows = "".join(
        (_ROW).format(
            *(
                html.escape(str(s[k]))
                for k in ("name", "region", "jurisdiction", "max_data_class", "state")
            ),
            "up" if s["healthy"] else "down",
            "healthy" if s["healthy"] else "unavailable",
            _percent(s.get("availability_24h")),
            html.escape(", ".join(s["models"])),  # type: ignore[arg-type]
        )
        for s in sites
    )
    return (
        "<!doctype html><html><head><meta charset=utf-8><title>Verbund status</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:.3em 1em;text-align:left}"
        ".up{color:#080}.down{color:#b00}</style></head><body>"
        f"<h1>Verbund status</h1><p>Access point {html.escape(str(access_point))}</p>"
        "<table><tr><th>site</th><th>region</th><th>jurisdiction</th><th>max data class</th>"
        "<th>state</th><th>health</th><th>availability (24 h)</th><th>models</th></tr>"
        f"{rows}</table></body></html>"
    )


async def metrics(request: Request) -> Response:
    svc = services(request)
    return Response(
        svc.telemetry.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8"
    )
