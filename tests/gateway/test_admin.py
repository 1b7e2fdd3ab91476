"""The admin API: keys, institutions, site lifecycle, usage and audit (fake backends)."""

from __future__ import annotations

from tests.conftest import Gateway


async def test_key_lifecycle(gw: Gateway) -> None:
    resp = await gw.client.post(
        "/admin/keys", json={"institution": "uni-b", "name": "moodle"}, headers=gw.admin()
    )
    assert resp.status_code == 201
    created = resp.json()
    assert set(created) == {"id", "key", "institution", "name", "created_at"}
    assert created["key"].startswith("vb-") and len(created["key"]) > 40
    key_auth = {"authorization": f"Bearer {created['key']}"}
    assert (await gw.client.get("/v1/models", headers=key_auth)).status_code == 200

    listed = (await gw.client.get("/admin/keys", headers=gw.admin())).json()["data"]
    assert created["key"] not in repr(listed)
    assert any(k["id"] == created["id"] and not k["revoked"] for k in listed)

    revoke = await gw.client.delete(f"/admin/keys/{created['id']}", headers=gw.admin())
    assert revoke.status_code == 200
    assert (await gw.client.get("/v1/models", headers=key_auth)).status_code == 401
    missing = await gw.client.delete("/admin/keys/key_nope", headers=gw.admin())
    assert missing.status_code == 404


async def test_keys_are_stored_hashed(gw: Gateway) -> None:
    from sqlalchemy import select

    from verbund.store import ApiKeyRow

    async with gw.services.store.session() as s:
        rows = (await s.execute(select(ApiKeyRow))).scalars().all()
    stored = repr([(r.key_hash, r.prefix, r.name) for r in rows])
    for key in gw.keys.values():
        assert key not in stored
        assert len(rows[0].prefix) < 12


async def test_key_for_unknown_institution_and_bad_body(gw: Gateway) -> None:
    r = await gw.client.post("/admin/keys", json={"institution": "nope"}, headers=gw.admin())
    assert r.status_code == 404
    r = await gw.client.post("/admin/keys", json={"institution": 5}, headers=gw.admin())
    assert r.status_code == 400 and r.json()["error"]["param"] == "institution"
    r = await gw.client.post(
        "/admin/keys", json={"institution": "uni-a", "x": 1}, headers=gw.admin()
    )
    assert r.status_code == 400


async def test_create_institution_then_key(gw: Gateway) -> None:
    r = await gw.client.post(
        "/admin/institutions",
        headers=gw.admin(),
        json={"id": "fh-d", "name": "FH D", "home_region": "SN", "default_data_class": "public"},
    )
    assert r.status_code == 201
    dup = await gw.client.post("/admin/institutions", headers=gw.admin(), json={"id": "fh-d"})
    assert dup.status_code == 400
    key = (
        await gw.client.post("/admin/keys", json={"institution": "fh-d"}, headers=gw.admin())
    ).json()["key"]
    resp = await gw.client.post(
        "/v1/chat/completions",
        headers={"authorization": f"Bearer {key}"},
        json={"model": "smol", "messages": [{"role": "user", "content": "x"}]},
    )
    assert resp.status_code == 200


async def test_drain_persists_and_routes_around(gw: Gateway) -> None:
    r = await gw.client.post("/admin/sites/west/drain", headers=gw.admin())
    assert r.json() == {"site": "west", "state": "draining", "previous": "active"}
    for _ in range(3):
        assert (await gw.chat()).headers["x-verbund-site"] != "west"
    status = (await gw.client.get("/status")).json()
    west = next(s for s in status["sites"] if s["name"] == "west")
    assert west["state"] == "draining"
    # a restart reads the state back from the store
    await gw.services.lifecycle.load()
    assert gw.services.federation.sites["west"].state.value == "draining"
    await gw.client.post("/admin/sites/west/resume", headers=gw.admin())
    assert (await gw.chat()).headers["x-verbund-site"] == "west"
    assert (
        await gw.client.post("/admin/sites/nowhere/drain", headers=gw.admin())
    ).status_code == 404


async def test_usage_report_groups(gw: Gateway) -> None:
    await gw.chat()
    await gw.chat("uni-b")
    await gw.chat(stream=True)
    r = await gw.client.get(
        "/admin/usage", params={"group_by": "institution,site"}, headers=gw.admin()
    )
    rows = r.json()["data"]
    a = [x for x in rows if x["institution"] == "uni-a"]
    assert sum(x["requests"] for x in a) == 2
    assert sum(x["total_tokens"] for x in a) == 11 + 14
    bad = await gw.client.get("/admin/usage", params={"group_by": "colour"}, headers=gw.admin())
    assert bad.status_code == 400


async def test_audit_chain_records_admin_actions(gw: Gateway) -> None:
    await gw.client.post("/admin/sites/ost/maintenance", headers=gw.admin())
    entries = (await gw.client.get("/admin/audit", headers=gw.admin())).json()["data"]
    actions = [e["action"] for e in entries]
    assert "site.maintenance" in actions and "key.create" in actions
    verify = (await gw.client.get("/admin/audit/verify", headers=gw.admin())).json()
    assert verify["ok"] and verify["entries"] == len(entries)


async def test_status_is_public_and_has_no_tenant_data(gw: Gateway) -> None:
    r = await gw.client.get("/status")
    assert r.status_code == 200
    body = r.json()
    site = body["sites"][0]
    for field in ("name", "region", "jurisdiction", "max_data_class", "state", "healthy", "models"):
        assert field in site
    assert "uni-a" not in r.text and "backends" not in site
    html = await gw.client.get("/status", headers={"accept": "text/html"})
    assert html.headers["content-type"].startswith("text/html") and "<table>" in html.text


async def test_health_and_readiness(gw: Gateway) -> None:
    assert (await gw.client.get("/healthz")).status_code == 200
    assert (await gw.client.get("/readyz")).json()["ready"] is True
    for b in gw.services.federation.backends.values():
        b.healthy = False
    r = await gw.client.get("/readyz")
    assert r.status_code == 503 and r.json()["backends_available"] == 0
