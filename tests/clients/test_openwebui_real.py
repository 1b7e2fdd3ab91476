"""Open WebUI (its own venv, made by scripts/_openwebui_env.sh) with the demo federation
as its OpenAI connection, driven in Debian's headless Chromium: the model picker lists
Verbund's chat models, a chat message gets a streamed answer from a Verbund site, a file
attached to the chat is embedded through Verbund's embedding model, and the access point
records the usage, per person (the front-end key's forwarded user headers)."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import TimeoutError as PlaywrightTimeout
from playwright.async_api import expect

from harness.browser import open_browser, screenshot
from harness.demo import Demo
from harness.openwebui import OpenWebUI, start_openwebui
from harness.polling import apoll
from tests.clients.conftest import EMBEDDING_MODEL, MODEL, OPENWEBUI_VENV, installed
from tests.clients.usage import usage_rows

pytestmark = pytest.mark.real
NOTE = (
    "Verbund notes. The cafeteria of the Rechenzentrum West serves Pumpernickel every "
    "Thursday. The Rechenzentrum Sued runs the digits classifier.\n"
)


@pytest.fixture(scope="module")
def front_end_key(demo: Demo) -> dict[str, Any]:
    """A key of uni-a marked as a front-end's, listing only chat models."""
    with demo.admin() as admin:
        key = admin.post("/admin/keys", json={"institution": "uni-a", "name": "open-webui"})
        key.raise_for_status()
        created: dict[str, Any] = key.json()
        admin.patch(
            f"/admin/keys/{created['id']}", json={"front_end": True, "model_kinds": ["chat"]}
        ).raise_for_status()
    return created


@pytest.fixture(scope="module")
def webui(
    demo: Demo, front_end_key: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OpenWebUI]:
    installed(OPENWEBUI_VENV / "bin" / "open-webui")
    started = time.monotonic()
    ui = start_openwebui(
        tmp_path_factory.mktemp("openwebui") / "data",
        demo.url,
        front_end_key["key"],
        EMBEDDING_MODEL,
    )
    print(f"Open WebUI ready after {time.monotonic() - started:.1f} s")
    yield ui
    ui.stop()


async def ready_page(ctx: Any, url: str) -> Any:
    """The chat page, its first-visit release notes dismissed."""
    page = await ctx.new_page()
    await page.goto(url + "/", timeout=180_000)
    await page.locator("#chat-input").wait_for(state="attached", timeout=180_000)
    notes = page.get_by_role("button", name="Okay, Let's Go!")
    with contextlib.suppress(PlaywrightTimeout):  # shown once per user and version
        await notes.click(timeout=10_000)
    return page


@pytest.mark.timeout(1500)  # Open WebUI's start-up alone takes minutes on 2 busy cores
async def test_open_webui_chats_and_embeds_through_verbund(
    demo: Demo, webui: OpenWebUI, front_end_key: dict[str, Any], tmp_path: Path
) -> None:
    since = time.time() - 1
    key_id = front_end_key["id"]

    def mine(endpoint: str) -> list[dict[str, Any]]:
        rows = usage_rows(demo, "key,endpoint,status,person", since)
        return [r for r in rows if r["key"] == key_id and r["endpoint"] == endpoint]

    async with open_browser() as ctx:
        page = await ready_page(ctx, webui.url)

        # the model picker: Verbund's chat model, not its embedding or OIP models
        await page.locator("#model-selector-model-button").click(timeout=60_000)
        listed = page.get_by_role("option")
        await listed.first.wait_for(timeout=60_000)
        names = " ".join(await listed.all_inner_texts())
        await screenshot(page, "openwebui-models")
        assert MODEL in names and EMBEDDING_MODEL not in names and "digits" not in names
        await page.get_by_role("option").filter(has_text=MODEL).first.click()

        # a chat message, answered by a Verbund site, streamed
        await page.locator("#chat-input").click()
        await page.keyboard.type("Say hello in one short sentence.")
        await page.keyboard.press("Enter")
        answer = page.locator("#response-content-container").last
        await apoll(lambda: mine("/v1/chat/completions"), "the chat's usage", 240, every=1.0)
        await expect(answer).to_contain_text(re.compile(r"\w"), timeout=60_000)
        await screenshot(page, "openwebui-answer")
        # words, not llama.cpp's cut-off automatic tool choice ("functions.<name>:"):
        # Open WebUI sends its built-in tools with every message
        assert not re.fullmatch(r"functions\.\S*:?", (await answer.inner_text()).strip())
        chat = mine("/v1/chat/completions")
        assert all(r["status"] == "ok" for r in chat), chat
        # the forwarded user headers of a front-end key name a person (a pseudonym)
        assert all(r["person"] for r in chat), chat

        # a file attached to the chat is embedded through Verbund's embedding model
        note = tmp_path / "verbund-notes.txt"
        note.write_text(NOTE)
        await page.locator('input[type="file"][multiple]').first.set_input_files(str(note))
        await apoll(lambda: mine("/v1/embeddings"), "the file's embedding usage", 240, every=1.0)
        await screenshot(page, "openwebui-file")
        embedded = mine("/v1/embeddings")
        assert all(r["status"] == "ok" for r in embedded), embedded
