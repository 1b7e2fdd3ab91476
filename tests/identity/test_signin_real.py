"""Signing in through the real OpenID provider (npm oidc-provider), and the attacks on
it: replayed state, session fixation, open redirects, CSRF, non-members, logout."""

from __future__ import annotations

import json
import logging
from urllib.parse import parse_qs, quote, urlsplit

import pytest

from tests.identity.conftest import BASE, People

pytestmark = pytest.mark.real


async def test_member_signs_in_and_out(people: People) -> None:
    done = await people.sign_in("ada", next_path="/console/keys")
    assert done.headers["location"] == "/console/keys"
    cookie = done.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "path=/" in cookie
    me = (await people.client.get("/auth/session")).json()
    assert me["role"] == "member" and me["institution"] == "uni-a"
    assert me["display_name"] == "Ada Lovelace"
    assert me["id"] != people.idp.person("ada").sub  # pseudonymous, not the provider's
    token = people.client.cookies["verbund_session"]
    out = await people.client.post("/auth/logout", headers=await people.csrf())
    assert out.status_code == 200 and out.json()["signed_out"] is True
    end = out.json()["end_session_url"]
    assert end.startswith(people.idp.issuer) and "post_logout_redirect_uri" in end
    assert (await people.client.get("/auth/session")).status_code == 401
    # the old cookie is worth nothing: the session is gone from the store
    people.client.cookies.set("verbund_session", token, domain="127.0.0.1")
    assert (await people.client.get("/auth/session")).status_code == 401
    assert (await people.client.get("/v1/me/keys")).status_code == 401


async def test_roles_come_from_entitlements(people: People) -> None:
    for login, role, institution, site in (
        ("grace", "institution_admin", "uni-a", None),
        ("linus", "member", "uni-b", None),
        ("alan", "auditor", "uni-a", None),
        ("olga", "site_operator", "uni-b", "west"),  # last: the session below is hers
    ):
        await people.sign_in(login)
        me = (await people.client.get("/auth/session")).json()
        assert (me["role"], me["institution"], me["site"]) == (role, institution, site), login
    olga = await people.csrf()
    assert (await people.client.post("/admin/sites/west/drain", headers=olga)).status_code == 200
    assert (await people.client.post("/admin/sites/sued/drain", headers=olga)).status_code == 403


async def test_non_member_is_refused_with_a_clear_page(people: People) -> None:
    callback = await people.authorize("eve")
    page = await people.client.get(callback)
    assert page.status_code == 403 and page.headers["content-type"].startswith("text/html")
    assert "not a member" in page.text
    assert "&lt;b&gt;evil&lt;/b&gt;-u.example" in page.text and "<b>evil" not in page.text
    assert page.headers["x-frame-options"] == "DENY"
    assert "verbund_session" not in people.client.cookies


async def test_state_works_once(people: People) -> None:
    callback = await people.authorize("ada")
    assert (await people.client.get(callback)).status_code == 303
    replay = await people.client.get(callback)
    assert replay.status_code == 401 and "used already" in replay.text
    assert "set-cookie" not in replay.headers
    forged = await people.client.get(f"{BASE}/auth/callback?code=x&state=made-up")
    assert forged.status_code == 401


async def test_session_fixation(people: People) -> None:
    # an attacker plants a session id of their own choosing...
    people.client.cookies.set("verbund_session", "attacker-chosen", domain="127.0.0.1")
    await people.sign_in("ada")
    mine = people.client.cookies["verbund_session"]
    assert mine != "attacker-chosen"
    # ...or a real session of their own: signing in ends it, the victim gets a new one
    await people.sign_in("linus")
    planted = people.client.cookies["verbund_session"]
    await people.sign_in("ada")
    fresh = people.client.cookies["verbund_session"]
    assert fresh != planted
    people.client.cookies.set("verbund_session", planted, domain="127.0.0.1")
    assert (await people.client.get("/auth/session")).status_code == 401


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/",
        "//evil.example/x",
        "/\\evil.example",
        "javascript:alert(1)",
        "/%0d%0aSet-Cookie:x=1",
        "evil.example",
    ],
)
async def test_no_open_redirect_through_the_return_url(people: People, target: str) -> None:
    done = await people.sign_in("ada", next_path=quote(target, safe=""))
    location = done.headers["location"]
    assert location.startswith("/") and not location.startswith(("//", "/\\"))
    assert urlsplit(location).netloc == "" and "evil.example" not in location.split("?")[0]


async def test_return_url_on_this_site_is_kept(people: People) -> None:
    done = await people.sign_in("ada", next_path=quote("/console/usage?days=7", safe=""))
    assert done.headers["location"] == "/console/usage?days=7"


async def test_own_key_after_real_sign_in_is_attributed_to_the_person(people: People) -> None:
    await people.sign_in("ada")
    # a member's session on the admin API: refused, reads and writes alike
    assert (await people.client.get("/admin/usage?institution=uni-a")).status_code == 403
    drain = await people.client.post("/admin/sites/west/drain", headers=await people.csrf())
    assert drain.status_code == 403
    forged = await people.client.post("/v1/me/keys", json={"name": "laptop"})
    assert forged.status_code == 403  # CSRF: no token
    made = await people.client.post(
        "/v1/me/keys", json={"name": "laptop"}, headers=await people.csrf()
    )
    assert made.status_code == 201
    auth = {"authorization": f"Bearer {made.json()['key']}"}
    body = {"model": "smol", "messages": [{"role": "user", "content": "hi"}]}
    assert (await people.client.post("/v1/chat/completions", json=body, headers=auth)).is_success
    me = (await people.client.get("/auth/session")).json()["id"]
    usage = (await people.client.get("/v1/me/usage")).json()["data"]
    assert len(usage) == 1 and usage[0]["requests"] == 1
    rows = await people.client.get(
        "/admin/usage?group_by=person,key&institution=uni-a", headers=people.admin()
    )
    assert [(r["person"], r["key"]) for r in rows.json()["data"]] == [(me, made.json()["id"])]


async def test_logout_by_form_needs_the_token(people: People) -> None:
    await people.sign_in("ada")
    forged = await people.client.post("/auth/logout", data={"csrf_token": "nope"})
    assert forged.status_code == 403
    assert (await people.client.get("/auth/session")).status_code == 200
    token = (await people.csrf())["x-csrf-token"]
    out = await people.client.post("/auth/logout", data={"csrf_token": token})
    assert out.status_code == 303
    assert out.headers["location"].startswith(people.idp.issuer)  # RP-initiated logout
    assert parse_qs(urlsplit(out.headers["location"]).query)["post_logout_redirect_uri"] == [
        f"{BASE}/auth/signed-out"
    ]
    end = await people.client.get(out.headers["location"])  # the provider offers it
    assert end.status_code == 200
    assert (await people.client.get("/auth/session")).status_code == 401


async def test_no_secret_of_the_sign_in_reaches_the_logs_or_the_audit_log(
    people: People, caplog: pytest.LogCaptureFixture
) -> None:
    """The session cookie, the CSRF token, the client secret, a made key, the login's
    password: none is in what the access point logs or audits, even a refused sign-in's."""
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="verbund")  # (a driver's debug log shows SQL)
    refused = await people.authorize("eve")  # not a member: logged and refused
    assert (await people.client.get(refused, follow_redirects=False)).status_code == 403
    await people.sign_in("grace")
    csrf = await people.csrf()
    made = await people.client.post("/v1/me/keys", json={"name": "laptop"}, headers=csrf)
    admin = await people.client.post(
        "/admin/keys", json={"role": "auditor", "name": "audit"}, headers=people.admin()
    )
    assert made.status_code == 201 and admin.status_code == 201
    audit = [
        json.dumps([r.actor, r.action, r.target, r.before, r.after])
        for r in await people.services.audit.entries()
    ]
    secrets = {
        "session cookie": people.client.cookies["verbund_session"],
        "csrf token": csrf["x-csrf-token"],
        "client secret": people.idp.client_secret,
        "key": made.json()["key"],
        "admin key": admin.json()["key"],
        "password": people.idp.person("grace").password,
    }
    assert audit and caplog.records
    for what, secret in secrets.items():
        assert secret not in caplog.text, what
        assert not [a for a in audit if secret in a], what
