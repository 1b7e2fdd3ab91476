"""Headless Chromium from Debian's ``chromium`` package, driven by Playwright.

Playwright's Python package brings its driver but no browser here: the browser is the
system's (``/usr/bin/chromium``, installed by ``scripts/_browser_env.sh``), so nothing is
downloaded at run time. The flags keep Chromium off the network it would otherwise try
(component updates, sync, Google's hosts), which this machine refuses, and give it a fresh
profile per browser so no session leaks between tests.

:func:`open_browser` is an async context manager that yields a Playwright ``Browser``;
:func:`screenshot` saves a page under ``artifacts/screenshots/`` (kept by CI as test
artefacts) and returns the path.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from harness.processes import ROOT

CHROMIUM = os.environ.get("VERBUND_CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--no-sandbox",  # the tests run as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
SCREENSHOTS = ROOT / "artifacts" / "screenshots"


def chromium_path() -> str:
    """The system Chromium; an error that says how to get it when it is missing."""
    found = shutil.which(CHROMIUM) or (CHROMIUM if Path(CHROMIUM).exists() else None)
    if found is None:
        raise RuntimeError(f"{CHROMIUM} not found: scripts/_browser_env.sh installs it")
    return found


@asynccontextmanager
async def open_browser(**launch: Any) -> AsyncIterator[Any]:
    """A headless Chromium with a fresh profile, closed (and its profile removed) on exit."""
    from playwright.async_api import async_playwright

    profile = tempfile.mkdtemp(prefix="verbund-chromium-")
    try:
        async with async_playwright() as pw:
            context = await pw.chromium.launch_persistent_context(
                profile,
                executable_path=chromium_path(),
                headless=True,
                args=FLAGS,
                **launch,
            )
            try:
                yield context
            finally:
                await context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


async def screenshot(page: Any, name: str) -> Path:
    """Save ``page`` as ``artifacts/screenshots/<name>.png`` and return the path."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / (re.sub(r"[^A-Za-z0-9_.-]", "_", name) + ".png")
    await page.screenshot(path=str(path), full_page=True)
    return path
