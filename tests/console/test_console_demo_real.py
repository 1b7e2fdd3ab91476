"""The newcomer's path in a browser, on the real demo (``verbund up``: llama.cpp with
SmolLM2, the demo identity provider): open the console, sign in as a demo person, make a
key, call the model with the openai SDK, see the call in the plot; the federation's
three sites on the region diagram; a site's live load with its real backends."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from openai import OpenAI

from harness.browser import open_browser, screenshot
from harness.demo import Demo, start_demo
from harness.polling import poll

pytestmark = pytest.mark.real
MODEL = "smollm2-135m"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    d = start_demo(tmp_path_factory.mktemp("demo") / "state")
    yield d
    d.stop()


def person(demo: Demo, role: str) -> tuple[str, str]:
    people: dict[str, dict[str, Any]] = demo.info["people"]
    login = next(
        n for n, p in people.items() if p["role"] == role and p["institution"] == "uni-a"
    ) if role != "site_operator" else next(
        n for n, p in people.items() if p["role"] == role
    )  # fmt: skip
    return login, str(people[login]["password"])


async def sign_in(page: Any, demo: Demo, role: str, path: str) -> None:
    login, password = person(demo, role)
    await page.goto(demo.info["console"] + path)
    await page.fill('input[name="login"]', login)
    await page.fill('input[name="password"]', password)
    await page.click('button[type="submit"], input[type="submit"]')
    await page.wait_for_url(demo.info["console"] + path)


def llama_ready(demo: Demo) -> bool:
    with demo.admin() as admin:
        sites = admin.get("/admin/sites").json()["sites"]
    return all(b["healthy"] for s in sites for b in s["backends"] if "llama" in b["name"])


def chat(url: str, key: str) -> str:
    # retries: on a machine this busy a cold llama.cpp server may miss the first-byte
    # deadline once; the access point then answers 504, which the SDK retries
    client = OpenAI(
        base_url=url + "/v1",
        api_key=key,
        max_retries=2,
        timeout=90,
        http_client=httpx.Client(trust_env=False),
    )
    try:
        answer = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Say hello."}], max_tokens=8
        )
    finally:
        client.close()
    return answer.choices[0].message.content or ""


@pytest.mark.timeout(600)  # the demo starts six model servers first
async def test_newcomer_signs_in_makes_a_key_calls_smollm2_and_sees_it(demo: Demo) -> None:
    async with open_browser() as browser:
        page = await browser.new_page()
        await sign_in(page, demo, "member", "/keys")
        await page.fill('#create-key input[name="name"]', "my laptop")
        await page.click('#create-key button[type="submit"]')
        secret = page.locator('[data-testid="new-key"]')
        await secret.wait_for(state="visible")
        key = (await secret.inner_text()).strip()
        await asyncio.to_thread(poll, lambda: llama_ready(demo), "llama.cpp servers up", 120)
        assert await asyncio.to_thread(chat, demo.url, key)
        await page.goto(demo.info["console"] + "/usage")
        await page.locator("text=/[1-3] requests/").wait_for()
        bars = await page.evaluate(
            "[...document.querySelectorAll('svg.chart rect.bar title')].map(t => t.textContent)"
        )
        assert any(f"· {MODEL}: " in b for b in bars), bars
        await screenshot(page, "console-demo-usage")
        await page.goto(demo.info["console"] + "/models")
        assert MODEL in await page.inner_text('[data-testid="models"]')
        await screenshot(page, "console-demo-models")
        await page.goto(demo.info["console"] + "/federation")
        assert await page.locator("svg.regions g.site").count() == 3
        await screenshot(page, "console-demo-federation")
    async with open_browser() as browser:
        page = await browser.new_page()
        await sign_in(page, demo, "site_operator", "/site")
        rows = await page.locator('[data-testid="backends"] tr[data-backend]').count()
        assert rows >= 1
        await screenshot(page, "console-demo-site")
