"""Taking an access point out of service: ``POST /admin/drain``, readiness, connections."""

from __future__ import annotations

from tests.conftest import Gateway


async def test_admin_drain_turns_readiness_off_and_closes_connections(gw: Gateway) -> None:
    assert (await gw.client.get("/healthz")).headers.get("connection") != "close"

    r = await gw.client.post("/admin/drain", headers=gw.admin())
    assert r.status_code == 202
    assert r.json()["state"] == "draining" and r.json()["previous"] == "serving"

    ready = await gw.client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["draining"] is True
    # still served, but every answer asks the client to reconnect elsewhere
    ok = await gw.client.get("/healthz")
    assert ok.status_code == 200 and ok.headers["connection"] == "close"

    entries = (await gw.client.get("/admin/audit", headers=gw.admin())).json()["data"]
    name = gw.services.config.gateway.name
    assert [e["action"] for e in entries if e["target"] == name][-1] == "access_point.drain"


async def test_only_the_admin_may_drain(gw: Gateway) -> None:
    r = await gw.client.post("/admin/drain", headers=gw.auth())
    assert r.status_code in (401, 403)
    assert (await gw.client.get("/readyz")).json().get("draining") is None
