"""A person's own keys and usage: /v1/me (fake backends, sessions minted in the store)."""

from __future__ import annotations

import time

from tests.conftest import Gateway
from tests.identity.sessions import signed_in
from verbund.identity import Identity
from verbund.tenancy import Role


async def test_create_use_list_revoke_own_key(gw: Gateway) -> None:
    csrf = await signed_in(gw)
    made = await gw.client.post("/v1/me/keys", json={"name": "thesis"}, headers=csrf)
    assert made.status_code == 201
    key = made.json()
    assert key["key"].startswith("vb-") and key["institution"] == "uni-a"
    listed = (await gw.client.get("/v1/me/keys")).json()["data"]
    assert [k["id"] for k in listed] == [key["id"]]
    assert key["key"] not in repr(listed)  # shown once
    auth = {"authorization": f"Bearer {key['key']}"}
    body = {"model": "smol", "messages": [{"role": "user", "content": "hi"}]}
    assert (await gw.client.post("/v1/chat/completions", json=body, headers=auth)).is_success
    assert (await gw.chat()).is_success  # the institution's own key: nobody's
    usage = (await gw.client.get("/v1/me/usage?group_by=model")).json()["data"]
    assert usage == [usage[0]] and usage[0]["model"] == "smol" and usage[0]["requests"] == 1
    by_person = await gw.client.get(
        "/admin/usage?group_by=person&institution=uni-a", headers=gw.admin()
    )
    assert {r["person"] for r in by_person.json()["data"]} == {"u_person1", None}
    gone = await gw.client.delete(f"/v1/me/keys/{key['id']}", headers=csrf)
    assert gone.status_code == 200
    assert (
        await gw.client.post("/v1/chat/completions", json=body, headers=auth)
    ).status_code == 401


async def test_people_see_only_their_own_keys(gw: Gateway) -> None:
    csrf = await signed_in(gw, person="u_alice")
    alice = (await gw.client.post("/v1/me/keys", json={"name": "a"}, headers=csrf)).json()
    csrf = await signed_in(gw, person="u_bob")
    assert (await gw.client.get("/v1/me/keys")).json()["data"] == []
    r = await gw.client.delete(f"/v1/me/keys/{alice['id']}", headers=csrf)
    assert r.status_code == 404
    institution_key = (await gw.client.get("/admin/keys", headers=gw.admin())).json()["data"][0]
    r = await gw.client.delete(f"/v1/me/keys/{institution_key['id']}", headers=csrf)
    assert r.status_code == 404


async def test_a_federation_admin_of_no_member_institution_has_no_own_keys(gw: Gateway) -> None:
    csrf = await signed_in(gw, Role.federation_admin, institution=None)
    r = await gw.client.post("/v1/me/keys", json={"name": "x"}, headers=csrf)
    assert r.status_code == 403 and r.json()["error"]["code"] == "role_forbidden"
    assert (await gw.client.get("/v1/me/keys")).status_code == 403


async def test_key_creation_needs_the_csrf_token(gw: Gateway) -> None:
    await signed_in(gw)
    r = await gw.client.post("/v1/me/keys", json={"name": "x"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "csrf_failed"
    r = await gw.client.post("/v1/me/keys", json={"name": "x"}, headers={"x-csrf-token": ""})
    assert r.status_code == 403
    assert (await gw.client.get("/v1/me/keys")).json()["data"] == []


async def test_data_class_at_most_the_institutions_and_expiry(gw: Gateway) -> None:
    csrf = await signed_in(gw)  # uni-a: default internal
    too_high = await gw.client.post(
        "/v1/me/keys", json={"name": "x", "data_class": "sensitive"}, headers=csrf
    )
    assert too_high.status_code == 400 and too_high.json()["error"]["param"] == "data_class"
    past = await gw.client.post(
        "/v1/me/keys", json={"name": "x", "expires_at": int(time.time()) - 5}, headers=csrf
    )
    assert past.status_code == 400 and past.json()["error"]["param"] == "expires_at"
    public = await gw.client.post(
        "/v1/me/keys",
        json={"name": "open data", "data_class": "public", "expires_at": int(time.time()) + 60},
        headers=csrf,
    )
    assert public.status_code == 201 and public.json()["data_class"] == "public"
    for bad in ({}, {"name": ""}, {"name": "x", "extra": 1}, {"name": "x", "data_class": "top"}):
        r = await gw.client.post("/v1/me/keys", json=bad, headers=csrf)
        assert r.status_code == 400, bad


async def test_an_expired_key_is_refused(gw: Gateway) -> None:
    from sqlalchemy import update

    from verbund.store import ApiKeyRow

    csrf = await signed_in(gw)
    key = (
        await gw.client.post(
            "/v1/me/keys", json={"name": "x", "expires_at": int(time.time()) + 3600}, headers=csrf
        )
    ).json()
    async with gw.services.store.session() as s, s.begin():
        await s.execute(update(ApiKeyRow).where(ApiKeyRow.id == key["id"]).values(expires_at=1.0))
    await gw.services.keys.load()
    r = await gw.client.get("/v1/models", headers={"authorization": f"Bearer {key['key']}"})
    assert r.status_code == 401


async def test_admin_keys_and_people_without_institution_have_no_own_keys(gw: Gateway) -> None:
    r = await gw.client.get("/v1/me/keys", headers=gw.admin())
    assert r.status_code == 403 and r.json()["error"]["code"] == "not_a_person"
    await signed_in(gw, Role.site_operator, institution=None, site="west")
    assert (await gw.client.get("/v1/me/keys")).status_code == 403
    me = (await gw.client.get("/v1/me")).json()
    assert me["role"] == "site_operator" and me["site"] == "west"


async def test_per_person_quota_within_the_institution(gw: Gateway) -> None:
    people = gw.services.identity.people
    busy = await people.signed_in(
        "https://idp", "test", Identity("s1", "uni-a", Role.member, None, "B")
    )
    csrf = await signed_in(gw, person=busy.id)
    key = (await gw.client.post("/v1/me/keys", json={"name": "k"}, headers=csrf)).json()["key"]
    auth = {"authorization": f"Bearer {key}"}
    await signed_in(gw, Role.institution_admin, person="u_admin")
    listed = (await gw.client.get("/admin/people?institution=uni-a")).json()["data"]
    assert [p["id"] for p in listed] == [busy.id] and listed[0]["display_name"] == "B"
    assert (await gw.client.get("/admin/people?institution=uni-b")).status_code == 403
    admin_csrf = {"x-csrf-token": (await gw.client.get("/auth/session")).json()["csrf_token"]}
    r = await gw.client.patch(
        f"/admin/people/{busy.id}", json={"requests_per_minute": 1}, headers=admin_csrf
    )
    assert r.status_code == 200 and r.json()["requests_per_minute"] == 1
    body = {"model": "smol", "messages": [{"role": "user", "content": "hi"}]}
    assert (await gw.client.post("/v1/chat/completions", json=body, headers=auth)).is_success
    second = await gw.client.post("/v1/chat/completions", json=body, headers=auth)
    assert second.status_code == 429
    # the institution's other keys are not this person's quota
    assert (await gw.chat()).is_success
    other = await people.signed_in(
        "https://idp", "t", Identity("s2", "uni-b", Role.member, None, "")
    )
    r = await gw.client.patch(
        f"/admin/people/{other.id}", json={"requests_per_minute": 1}, headers=admin_csrf
    )
    assert r.status_code == 403


async def test_usage_since_must_be_a_time(gw: Gateway) -> None:
    await signed_in(gw)
    for since in ("nan", "inf", "yesterday"):
        r = await gw.client.get("/v1/me/usage", params={"since": since})
        assert r.status_code == 400 and r.json()["error"]["param"] == "since", since
    assert (await gw.client.get("/v1/me/usage", params={"since": "0"})).status_code == 200
