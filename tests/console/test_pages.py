"""The console's pages in-process: who sees what, forms with CSRF, names as text, headers."""

from __future__ import annotations

import json
import time

import httpx
from sqlalchemy import update

from tests.conftest import MODEL, Gateway
from tests.console.conftest import EVIL, SignIn, csrf_of
from verbund.audit import verify_chain
from verbund.config import SiteState
from verbund.store import AuditRow, SessionRow
from verbund.tenancy import Role

PAGES = [
    f"/console/{p}"
    for p in ("", "keys", "usage", "models", "federation", "institution", "site", "audit")
]


def assert_protected(r: httpx.Response) -> None:
    csp = r.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["x-content-type-options"] == "nosniff"


async def test_without_a_session_every_page_sends_to_the_sign_in(console: Gateway) -> None:
    for path in PAGES:
        r = await console.client.get(path)
        assert r.status_code == 303, path
        assert r.headers["location"].startswith("/auth/login?next=%2Fconsole%2F"), path
        assert_protected(r)
    r = await console.client.get("/console")
    assert r.status_code == 308 and r.headers["location"] == "/console/"


async def test_an_expired_session_sends_to_the_sign_in(console: Gateway, sign_in: SignIn) -> None:
    member = await sign_in(Role.member)
    assert (await member.get("/console/keys")).status_code == 200
    async with console.services.store.session() as s, s.begin():
        await s.execute(update(SessionRow).values(expires_at=time.time() - 1))
    r = await member.get("/console/keys")
    assert r.status_code == 303 and r.headers["location"] == "/auth/login?next=%2Fconsole%2Fkeys"


def csrf_meta(html: str) -> str:
    return html.split('<meta name="csrf-token" content="')[1].split('"')[0]


async def test_member_creates_a_key_sees_it_once_uses_it_and_sees_the_use(
    console: Gateway, sign_in: SignIn
) -> None:
    """What the keys page's script does: the key API with the page's CSRF token."""
    member = await sign_in(Role.member, name="Grace")
    page = await member.get("/console/keys")
    assert page.status_code == 200 and "Grace" in page.text and "No keys yet" in page.text
    assert_protected(page)
    assert page.headers["cache-control"] == "no-store"
    token = csrf_meta(page.text)
    r = await member.post(
        "/v1/me/keys", json={"name": "grace-laptop"}, headers={"x-csrf-token": token}
    )
    assert r.status_code == 201
    key = r.json()["key"]
    again = await member.get("/console/keys")
    assert key not in again.text and "grace-laptop" in again.text  # the page never shows it
    chat = await console.client.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
        headers={"authorization": f"Bearer {key}"},
    )
    assert chat.status_code == 200
    usage = await member.get("/console/usage")
    assert usage.status_code == 200
    assert "1 requests" in usage.text
    assert f"<td>{MODEL}</td>" in usage.text  # the table row
    assert "Tokens by day and model (you)" in usage.text and "<svg" in usage.text
    # another member's page shows neither the key nor the use
    other = await sign_in(Role.member)
    assert "grace-laptop" not in (await other.get("/console/keys")).text
    assert "0 requests" in (await other.get("/console/usage")).text


async def test_key_creation_without_the_csrf_token_is_refused(
    console: Gateway, sign_in: SignIn
) -> None:
    member = await sign_in(Role.member)
    before = len(await console.services.keys.list("uni-a"))
    for headers in ({}, {"x-csrf-token": "forged"}):
        r = await member.post("/v1/me/keys", json={"name": "x"}, headers=headers)
        assert r.status_code == 403 and r.json()["error"]["code"] == "csrf_failed"
    assert len(await console.services.keys.list("uni-a")) == before


async def test_member_is_refused_admin_pages(console: Gateway, sign_in: SignIn) -> None:
    member = await sign_in(Role.member)
    home = await member.get("/console/")
    assert "/console/institution" not in home.text and "/console/audit" not in home.text
    for path in ("/console/institution", "/console/site", "/console/audit",
                 "/console/audit/export", "/console/institution?institution=uni-b"):  # fmt: skip
        r = await member.get(path)
        assert r.status_code == 403, path
        assert "Not for your role" in r.text
        assert_protected(r)
    # and the API refuses the member's session the same way
    r = await member.get("/admin/usage", params={"institution": "uni-a"})
    assert r.status_code == 403


async def test_institution_admin_sees_own_institution_only(
    console: Gateway, sign_in: SignIn
) -> None:
    admin = await sign_in(Role.institution_admin)
    await console.chat("uni-a")
    r = await admin.get("/console/institution")
    assert r.status_code == 200
    for title in ("Tokens by person (uni-a)", "Tokens by key (uni-a)", "Budget burn-down"):
        assert title in r.text
    assert 'data-testid="institution-keys"' in r.text
    assert (await admin.get("/console/institution?institution=uni-b")).status_code == 404


async def test_site_operator_drains_own_site_not_another(console: Gateway, sign_in: SignIn) -> None:
    op = await sign_in(Role.site_operator, institution=None, site="west")
    page = await op.get("/console/site")
    assert page.status_code == 200 and "Site west" in page.text
    token = csrf_of(page.text)
    r = await op.post("/console/sites/west/drain", data={"csrf_token": token})
    assert r.status_code == 200 and "west: active → draining" in r.text
    assert console.services.federation.sites["west"].state is SiteState.draining
    r = await op.post("/console/sites/ost/drain", data={"csrf_token": token})
    assert r.status_code == 403
    assert console.services.federation.sites["ost"].state is SiteState.active
    assert (await op.get("/console/site?site=ost")).status_code == 403
    r = await op.post("/console/sites/west/resume", data={})  # no token: refused
    assert r.status_code == 403
    big = {"csrf_token": token, "pad": "x" * 70_000}  # refused before it is parsed
    assert (await op.post("/console/sites/west/resume", data=big)).status_code == 413
    assert console.services.federation.sites["west"].state is SiteState.draining
    load = await op.get("/console/sites/west/load")
    assert [b["name"] for b in load.json()["backends"]] == ["west-1"]
    entries = await console.services.audit.entries()
    assert entries[-1].action == "site.draining" and entries[-1].role == "site_operator"


async def test_auditor_sees_the_chain_verified_then_broken(
    console: Gateway, sign_in: SignIn
) -> None:
    auditor = await sign_in(Role.auditor, institution=None)
    r = await auditor.get("/console/audit")
    assert r.status_code == 200 and "Verified" in r.text
    export = await auditor.get("/console/audit/export")
    lines = [json.loads(x) for x in export.text.splitlines()]
    assert lines and verify_chain(lines).ok
    statement = await auditor.get("/console/audit/settlement.json?month=2025-01")
    assert statement.json()["month"] == "2025-01"
    assert (await auditor.get("/console/audit?month=2025-13")).status_code == 400
    async with console.services.store.session() as s, s.begin():
        await s.execute(update(AuditRow).where(AuditRow.seq == 2).values(actor="mallory"))
    r = await auditor.get("/console/audit")
    assert "Broken" in r.text and "at entry 2" in r.text


async def test_names_with_markup_are_shown_as_text(console: Gateway, sign_in: SignIn) -> None:
    member = await sign_in(Role.member, name=EVIL)
    page = await member.get("/console/keys")
    r = await member.post(
        "/v1/me/keys", json={"name": EVIL}, headers={"x-csrf-token": csrf_meta(page.text)}
    )
    assert r.status_code == 201
    for path in ("/console/keys", "/console/models", "/console/"):
        r = await member.get(path)
        assert "<script>alert" not in r.text, path
        assert "&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt;" in r.text, path
    admin = await sign_in(Role.institution_admin, name="Admin")
    r = await admin.get("/console/institution")
    assert "<script>alert" not in r.text
    assert "Universität A &lt;script&gt;" in r.text  # the institution's name
    assert "&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt;" in r.text  # key name, owner


async def test_federation_page_shows_every_site_by_region(
    console: Gateway, sign_in: SignIn
) -> None:
    member = await sign_in(Role.member)
    r = await member.get("/console/federation")
    assert r.status_code == 200
    for site in ("west", "sued", "ost"):
        assert f'data-site="{site}"' in r.text
    assert "Availability per hour, last 24 hours" in r.text
    assert "Availability per day, last 30 days" in r.text


async def test_assets_are_served_by_the_access_point(console: Gateway) -> None:
    css = await console.client.get("/console/static/console.css")
    js = await console.client.get("/console/static/console.js")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert_protected(css)
    assert "no-store" not in css.headers.get("cache-control", "")


async def test_the_navigation_lists_exactly_the_pages_a_role_may_open(
    console: Gateway, sign_in: SignIn
) -> None:
    """The menu and the pages make one decision: a link is shown iff its page opens."""
    from verbund.console._page import NAV

    people = [
        (Role.member, "uni-a", None),
        (Role.institution_admin, "uni-a", None),
        (Role.site_operator, None, "west"),
        (Role.site_operator, None, None),  # an operator whose site is not known
        (Role.auditor, "uni-a", None),
        (Role.federation_admin, None, None),
    ]
    for role, institution, site in people:
        who = await sign_in(role, institution=institution, site=site)
        home = (await who.get("/console/")).text
        for item in NAV:
            opens = (await who.get(f"/console{item.path}")).status_code == 200
            listed = f'href="/console{item.path}"' in home
            assert listed == opens, (role, site, item.path)


async def test_the_site_page_shows_its_on_demand_node_time(
    console: Gateway, sign_in: SignIn
) -> None:
    from verbund.store import NodeTimeRow

    hour = int(time.time()) // 3600 * 3600
    async with console.services.store.session() as s, s.begin():
        for site, cpu in (("west", 7200.0), ("ost", 3600.0)):
            s.add(NodeTimeRow(site=site, model="smol-od", hour=hour, cpu_seconds=cpu,
                              gpu_seconds=0.0, updated_at=time.time()))  # fmt: skip
    op = await sign_in(Role.site_operator, institution=None, site="west")
    page = (await op.get("/console/site")).text
    table = page.split('data-testid="node-time"')[1].split("</table>")[0]
    assert "smol-od" in table and "2.00" in table  # west's two CPU hours
    assert "1.00" not in table  # not another site's
