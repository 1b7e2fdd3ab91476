"""The console in Debian's headless Chromium: people sign in through the real OpenID
provider (npm oidc-provider), make a key, call a model with the openai SDK, see the call
in the plot, sign out; roles are refused what they may not see; a site operator drains
their own site and no other; markup in a name stays text. Screenshots of every page go
to artifacts/screenshots/ (docs/img/ holds a few of them)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import AuthenticationError, OpenAI

from harness.browser import open_browser, screenshot
from harness.federation import backend, federation, institution, site
from harness.gateway import GatewayProcess
from harness.idp import Idp
from harness.polling import poll
from harness.ports import free_port
from harness.stub_backend import MODEL, stub_backend

pytestmark = pytest.mark.real

EVIL = "<script>window.pwned = 1</script>"
PRICES = {"currency": "EUR", "models": {"*": {"per_inference": "0.02"}}}


@dataclass
class Stack:
    url: str
    idp: Idp
    gateway: GatewayProcess

    def password(self, login: str) -> str:
        return self.idp.person(login).password


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One access point (two sites in two regions, a stub model server behind each) that
    trusts a real demo OpenID provider with the demo people."""
    work = tmp_path_factory.mktemp("console")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with stub_backend() as model_port, Idp(work / "idp", [url], operated_site="west") as idp:
        stub = f"http://127.0.0.1:{model_port}"
        config = federation(
            "ap-console",
            work / "state",
            [
                site("west", "NW", [backend("west-1", stub, [MODEL], max_concurrency=4)],
                     max_data_class="sensitive", prices=PRICES),
                site("ost", "SN", [backend("ost-1", stub, [MODEL], max_concurrency=4)],
                     max_data_class="internal", prices=PRICES),
            ],
            port=port,
            models=[{"name": MODEL, "kind": "chat", "license": "Apache-2.0",
                     "description": "a stub chat model"}],
            institutions=[
                institution("uni-a", name="Universität A", home_region="NW",
                            budget_tokens_per_month=2000),
                institution("uni-b", name="Universität B", home_region="SN"),
            ],
            auth={"oidc": [idp.settings(["uni-a", "uni-b"], ["west", "ost"])]},
        )  # fmt: skip
        gw = GatewayProcess(config, work / "gw", env=idp.env()).start()
        try:
            poll(
                lambda: all(b["healthy"] for b in gw.backends().values()),
                "both backends healthy",
                30,
            )
            yield Stack(url, idp, gw)
        finally:
            gw.stop()


async def sign_in(page: Any, stack: Stack, login: str, path: str) -> None:
    """Open ``path``; the console sends the browser to the provider's login page; sign in
    there and come back to ``path``."""
    await page.goto(stack.url + path)
    await page.wait_for_url(f"{stack.idp.issuer}/**")
    await page.fill('input[name="login"]', login)
    await page.fill('input[name="password"]', stack.password(login))
    await page.click('button[type="submit"], input[type="submit"]')
    await page.wait_for_url(stack.url + path)


def chat(url: str, key: str) -> Any:
    client = OpenAI(base_url=url + "/v1", api_key=key, http_client=httpx.Client(trust_env=False))
    try:
        return client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hallo"}]
        )
    finally:
        client.close()


async def test_member_makes_a_key_uses_it_sees_it_in_the_plot_and_signs_out(
    stack: Stack,
) -> None:
    async with open_browser() as browser:
        page = await browser.new_page()
        dialogs: list[str] = []
        page.on("dialog", lambda d: dialogs.append(d.message))
        await page.goto(stack.url + "/console/keys")
        await page.wait_for_url(f"{stack.idp.issuer}/**")
        await screenshot(page, "console-sign-in")
        await page.fill('input[name="login"]', "ada")
        await page.fill('input[name="password"]', stack.password("ada"))
        await page.click('button[type="submit"], input[type="submit"]')
        await page.wait_for_url(stack.url + "/console/keys")
        assert "Ada Lovelace" in await page.inner_text('[data-testid="who"]')

        await page.fill('#create-key input[name="name"]', f"notebook {EVIL}")
        await page.click('#create-key button[type="submit"]')
        secret = page.locator('[data-testid="new-key"]')
        await secret.wait_for(state="visible")
        key = (await secret.inner_text()).strip()
        assert key.startswith("vb-")
        # the name with markup is shown as text, and its script never ran
        row = page.locator("#keys tr", has_text="notebook")
        assert EVIL in await row.first.inner_text()
        assert await page.evaluate("window.pwned") is None and not dialogs
        await screenshot(page, "console-keys")

        answer = await asyncio.to_thread(chat, stack.url, key)
        assert answer.choices[0].message.content

        await page.goto(stack.url + "/console/usage")
        await page.locator("text=1 requests").wait_for()
        # today's bar of the model in the plots, named in its tooltip
        bars = await page.evaluate(
            "[...document.querySelectorAll('svg.chart rect.bar title')].map(t => t.textContent)"
        )
        assert any(f"· {MODEL}: 1" == b.split(" ", 2)[-1] for b in bars), bars
        await screenshot(page, "console-usage")

        await page.goto(stack.url + "/console/keys")
        assert key not in await page.content()  # shown once only
        # revoke it: the SDK is refused from then on
        await page.click("#keys button.revoke-key")
        await page.locator("#keys .badge.off", has_text="revoked").wait_for()
        with pytest.raises(AuthenticationError):
            await asyncio.to_thread(chat, stack.url, key)

        # sign out: Verbund's session ends at once, then the provider asks to end its own
        await page.click('header form button[type="submit"]')
        await page.wait_for_url(f"{stack.idp.issuer}/**")
        assert (await page.request.get(stack.url + "/auth/session")).status == 401
        await page.click('button[name="logout"][value="yes"]')
        await page.wait_for_url(stack.url + "/auth/signed-out")
        await page.goto(stack.url + "/console/keys")  # signed out: back to the sign-in
        await page.locator('input[name="password"]').wait_for()
        assert page.url.startswith(stack.idp.issuer)


async def test_member_is_refused_institution_admin_pages(stack: Stack) -> None:
    async with open_browser() as browser:
        page = await browser.new_page()
        await sign_in(page, stack, "ada", "/console/")
        nav = await page.inner_text("header nav")
        assert "Institution" not in nav and "Audit" not in nav
        response = await page.goto(stack.url + "/console/institution")
        assert response is not None and response.status == 403
        assert "Not for your role" in await page.inner_text("h1")
        await screenshot(page, "console-403")
        # the API refuses the same session
        api = await page.request.get(stack.url + "/admin/usage?institution=uni-a")
        assert api.status == 403


async def test_site_operator_drains_own_site_not_another(stack: Stack) -> None:
    async with open_browser() as browser:
        page = await browser.new_page()
        await sign_in(page, stack, "olga", "/console/site")
        assert "Site west" in await page.inner_text("h1")
        await page.click('button[data-action="drain"]')
        await page.locator('[data-testid="site-state"]', has_text="draining").wait_for()
        # the page's own script (allowed by its CSP) keeps the load table fresh
        async with page.expect_response(lambda r: r.url.endswith("/sites/west/load")) as info:
            pass
        assert (await info.value).status == 200
        await screenshot(page, "console-site")
        token = await page.get_attribute('meta[name="csrf-token"]', "content")
        other = await page.request.post(
            stack.url + "/console/sites/ost/drain", form={"csrf_token": token or ""}
        )
        assert other.status == 403
        states = {
            s["name"]: s["state"] for s in stack.gateway.admin("GET", "/admin/sites")["sites"]
        }
        assert states == {"west": "draining", "ost": "active"}
        await page.click('button[data-action="resume"]')
        await page.locator('[data-testid="site-state"]', has_text="active").wait_for()


async def test_admin_and_auditor_pages(stack: Stack) -> None:
    key = stack.gateway.create_key("uni-a", "lab server")["key"]
    await asyncio.to_thread(chat, stack.url, key)
    async with open_browser() as browser:
        page = await browser.new_page()
        await sign_in(page, stack, "grace", "/console/institution")
        await page.locator("text.chart-title", has_text="Tokens by key (uni-a)").wait_for()
        assert "lab server" in await page.inner_text('[data-testid="institution-keys"]')
        assert "Budget burn-down" in await page.inner_text('[data-testid="budget"]')
        await screenshot(page, "console-institution")
        await page.goto(stack.url + "/console/federation")
        assert await page.locator("svg.regions g.site").count() == 2
        await screenshot(page, "console-federation")
        await page.goto(stack.url + "/console/models")
        assert "Apache-2.0" in await page.inner_text('[data-testid="models"]')
        await screenshot(page, "console-models")
    async with open_browser() as browser:
        page = await browser.new_page()
        await sign_in(page, stack, "alan", "/console/audit")
        assert "Verified" in await page.inner_text('[data-testid="chain"]')
        await screenshot(page, "console-audit")
        async with page.expect_download() as download:
            await page.click("text=Export (JSON lines)")
        path = Path(await (await download.value).path())
        assert '"action"' in path.read_text()
