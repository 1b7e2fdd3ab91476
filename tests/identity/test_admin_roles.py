"""Role-scoped admin keys and people's sessions on the admin API (fake backends)."""

from __future__ import annotations

from typing import Any

import orjson

from tests.conftest import Gateway
from tests.identity.sessions import signed_in
from verbund.tenancy import Role


async def admin_key(gw: Gateway, **body: Any) -> dict[str, str]:
    r = await gw.client.post("/admin/keys", json=body, headers=gw.admin())
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["id"].startswith("akey_") and created["role"] == body["role"]
    return {"authorization": f"Bearer {created['key']}"}


async def test_site_operator_key_drains_its_own_site_and_no_other(gw: Gateway) -> None:
    op = await admin_key(gw, role="site_operator", site="west", name="west agent")
    r = await gw.client.post("/admin/sites/west/drain", headers=op)
    assert r.status_code == 200 and r.json()["state"] == "draining"
    other = await gw.client.post("/admin/sites/sued/drain", headers=op)
    assert other.status_code == 403 and other.json()["error"]["code"] == "role_forbidden"
    assert (await gw.client.post("/admin/sites/west/resume", headers=op)).status_code == 200
    own = await gw.client.get("/admin/sites/west", headers=op)
    assert own.status_code == 200 and own.json()["backends"][0]["name"] == "west-1"
    assert (await gw.client.get("/admin/sites/sued", headers=op)).status_code == 403
    assert (await gw.client.get("/admin/sites", headers=op)).status_code == 403
    assert (await gw.client.post("/admin/drain", headers=op)).status_code == 403
    assert (
        await gw.client.post("/admin/keys", json={"institution": "uni-a"}, headers=op)
    ).status_code == 403
    # the bootstrap key still runs every site
    assert (await gw.client.post("/admin/sites/sued/drain", headers=gw.admin())).status_code == 200


async def test_every_audit_entry_names_actor_and_role(gw: Gateway) -> None:
    op = await admin_key(gw, role="site_operator", site="west")
    await gw.client.post("/admin/sites/west/maintenance", headers=op)
    await gw.client.post("/admin/sites/west/resume", headers=gw.admin())
    entries = (await gw.client.get("/admin/audit", headers=gw.admin())).json()["data"]
    made, by_op, by_admin = entries[-3], entries[-2], entries[-1]
    assert made["action"] == "admin_key.create" and made["role"] == "federation_admin"
    assert made["actor"] == "admin"
    assert by_op["action"] == "site.maintenance" and by_op["role"] == "site_operator"
    assert by_op["actor"].startswith("akey_") and by_op["actor"] == made["target"]
    assert by_admin["actor"] == "admin" and by_admin["role"] == "federation_admin"
    verified = (await gw.client.get("/admin/audit/verify", headers=gw.admin())).json()
    assert verified["ok"] is True


async def test_role_is_part_of_the_audit_hash(gw: Gateway) -> None:
    from sqlalchemy import update

    from verbund.store import AuditRow

    op = await admin_key(gw, role="site_operator", site="west")
    await gw.client.post("/admin/sites/west/drain", headers=op)
    last = (await gw.client.get("/admin/audit", headers=gw.admin())).json()["data"][-1]
    async with gw.services.store.session() as s, s.begin():
        await s.execute(
            update(AuditRow).where(AuditRow.seq == last["seq"]).values(role="federation_admin")
        )
    verified = (await gw.client.get("/admin/audit/verify", headers=gw.admin())).json()
    assert verified["ok"] is False and verified["first_broken"] == last["seq"]


async def test_institution_admin_key_manages_its_institution_only(gw: Gateway) -> None:
    ia = await admin_key(gw, role="institution_admin", institution="uni-a")
    made = await gw.client.post("/admin/keys", json={"institution": "uni-a"}, headers=ia)
    assert made.status_code == 201
    assert (
        await gw.client.post("/admin/keys", json={"institution": "uni-b"}, headers=ia)
    ).status_code == 403
    listed = await gw.client.get("/admin/keys?institution=uni-a", headers=ia)
    assert listed.status_code == 200
    assert {k["institution"] for k in listed.json()["data"]} == {"uni-a"}
    assert (await gw.client.get("/admin/keys", headers=ia)).status_code == 403
    assert (await gw.client.get("/admin/usage?institution=uni-a", headers=ia)).status_code == 200
    assert (await gw.client.get("/admin/usage?institution=uni-b", headers=ia)).status_code == 403
    assert (await gw.client.get("/admin/budgets?institution=uni-a", headers=ia)).status_code == 200
    # another institution's key cannot be revoked or changed
    b_key = (await gw.client.get("/admin/keys?institution=uni-b", headers=gw.admin())).json()
    b_id = b_key["data"][0]["id"]
    assert (await gw.client.delete(f"/admin/keys/{b_id}", headers=ia)).status_code == 403
    assert (
        await gw.client.patch(f"/admin/keys/{b_id}", json={"requests_per_minute": 1}, headers=ia)
    ).status_code == 403
    own_id = made.json()["id"]
    assert (await gw.client.delete(f"/admin/keys/{own_id}", headers=ia)).status_code == 200
    # its own quotas and policy are the federation's to set
    change = await gw.client.patch(
        "/admin/institutions/uni-a", json={"requests_per_minute": 99999}, headers=ia
    )
    assert change.status_code == 403
    assert (await gw.client.get("/admin/audit", headers=ia)).status_code == 403


async def test_auditor_key_reads_and_changes_nothing(gw: Gateway) -> None:
    au = await admin_key(gw, role="auditor", name="auditor")
    for path in ("/admin/audit", "/admin/audit/verify", "/admin/usage", "/admin/budgets"):
        assert (await gw.client.get(path, headers=au)).status_code == 200, path
    assert (await gw.client.get("/admin/settlement?month=2026-01", headers=au)).status_code == 200
    assert (await gw.client.post("/admin/sites/west/drain", headers=au)).status_code == 403
    assert (
        await gw.client.post("/admin/keys", json={"institution": "uni-a"}, headers=au)
    ).status_code == 403
    assert (
        await gw.client.post("/admin/keys", json={"role": "auditor"}, headers=au)
    ).status_code == 403


async def test_admin_keys_do_no_inference_and_revoked_ones_nothing(gw: Gateway) -> None:
    au = await admin_key(gw, role="auditor")
    body = {"model": "smol", "messages": [{"role": "user", "content": "x"}]}
    r = await gw.client.post("/v1/chat/completions", json=body, headers=au)
    assert r.status_code == 403 and gw.upstream_calls() == 0
    keys = (await gw.client.get("/admin/keys?kind=admin", headers=gw.admin())).json()["data"]
    key_id = keys[-1]["id"]
    assert (await gw.client.delete(f"/admin/keys/{key_id}", headers=gw.admin())).status_code == 200
    assert (await gw.client.get("/admin/audit", headers=au)).status_code == 403


async def test_bad_admin_key_requests(gw: Gateway) -> None:
    for body in (
        {"role": "site_operator"},
        {"role": "site_operator", "site": "nowhere"},
        {"role": "institution_admin", "institution": "nope"},
        {"role": "emperor"},
    ):
        r = await gw.client.post("/admin/keys", json=body, headers=gw.admin())
        assert r.status_code == 400, body
        assert set(r.json()["error"]) == {"message", "type", "code", "param"}
    r = await gw.client.post("/admin/keys", json={"name": "x"}, headers=gw.admin())
    assert r.status_code == 400 and r.json()["error"]["param"] == "institution"


async def test_member_session_is_refused_on_admin_routes(gw: Gateway) -> None:
    csrf = await signed_in(gw, Role.member)
    for method, path in (
        ("GET", "/admin/sites"),
        ("GET", "/admin/usage?institution=uni-a"),
        ("GET", "/admin/keys?institution=uni-a"),
        ("GET", "/admin/audit"),
        ("POST", "/admin/sites/west/drain"),
        ("GET", "/admin/settlement?month=2026-01"),
        ("GET", "/admin/jobs"),
    ):
        r = await gw.client.request(method, path, headers=csrf)
        assert r.status_code == 403, (method, path)
        assert r.json()["error"]["code"] == "role_forbidden"
    assert gw.services.federation.sites["west"].state.value == "active"


async def test_institution_admin_session_and_csrf(gw: Gateway) -> None:
    csrf = await signed_in(gw, Role.institution_admin)
    body = {"institution": "uni-a", "name": "lab"}
    forged = await gw.client.post("/admin/keys", json=body)  # no CSRF token: another site's form
    assert forged.status_code == 403 and forged.json()["error"]["code"] == "csrf_failed"
    wrong = await gw.client.post("/admin/keys", json=body, headers={"x-csrf-token": "guess"})
    assert wrong.status_code == 403
    ok = await gw.client.post("/admin/keys", json=body, headers=csrf)
    assert ok.status_code == 201
    entries = (await gw.client.get("/admin/audit", headers=gw.admin())).json()["data"]
    assert entries[-1]["actor"] == "u_person1" and entries[-1]["role"] == "institution_admin"
    assert (await gw.client.get("/admin/usage?institution=uni-a")).status_code == 200


async def test_site_operator_session_drains_own_site(gw: Gateway) -> None:
    csrf = await signed_in(gw, Role.site_operator, institution=None, site="ost")
    assert (await gw.client.post("/admin/sites/ost/drain", headers=csrf)).status_code == 200
    assert (await gw.client.post("/admin/sites/west/drain", headers=csrf)).status_code == 403
    last = (await gw.client.get("/admin/audit", headers=gw.admin())).json()["data"][-1]
    assert orjson.loads(last["after"]) == {"state": "draining"}
    assert last["role"] == "site_operator"


async def test_no_credentials_and_expired_session(gw: Gateway) -> None:
    r = await gw.client.get("/admin/usage")
    assert r.status_code == 401 and r.json()["error"]["code"] == "not_signed_in"
    await signed_in(gw, Role.federation_admin)
    assert (await gw.client.get("/admin/usage")).status_code == 200
    from sqlalchemy import update

    from verbund.store import SessionRow

    async with gw.services.store.session() as s, s.begin():
        await s.execute(update(SessionRow).values(expires_at=1.0))
    assert (await gw.client.get("/admin/usage")).status_code == 401
    assert (await gw.client.get("/auth/session")).status_code == 401
