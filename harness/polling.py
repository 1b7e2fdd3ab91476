"""Waiting with a deadline: on a condition, or on an HTTP endpoint to answer.

Nothing in the harness sleeps a fixed time to let something happen; it polls for it
and fails naming what it waited for.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Mapping

import httpx


def poll(cond: Callable[[], object], what: str, within: float, every: float = 0.05) -> float:
    """Wait until ``cond()`` is true; the seconds that took. Raises TimeoutError naming ``what``."""
    began = time.monotonic()
    while not cond():
        if time.monotonic() - began > within:
            raise TimeoutError(f"timed out after {within}s waiting for {what}")
        time.sleep(every)
    return time.monotonic() - began


def wait_http(
    url: str,
    within: float = 30.0,
    *,
    ok: Callable[[int], bool] = lambda status: status == 200,
    check: Callable[[], None] | None = None,
    headers: Mapping[str, str] | None = None,
    verify: ssl.SSLContext | bool = True,
) -> None:
    """Poll ``GET url`` until its status passes ``ok``.

    ``check`` runs before every try and raises if waiting has become pointless (the
    server's process exited, say); ``headers`` and ``verify`` are for servers that want a
    credential or speak TLS with a CA of their own (a site agent).
    """
    last = "no answer"

    def answers() -> bool:
        nonlocal last
        if check is not None:
            check()
        try:
            status = httpx.get(
                url, timeout=2.0, trust_env=False, headers=headers, verify=verify
            ).status_code
        except httpx.HTTPError as exc:
            last = type(exc).__name__
            return False
        last = f"HTTP {status}"
        return ok(status)

    try:
        poll(answers, url, within, every=0.1)
    except TimeoutError:
        raise TimeoutError(f"{url} not ready within {within}s (last: {last})") from None


async def apoll(cond: Callable[[], object], what: str, within: float, every: float = 0.01) -> float:
    """:func:`poll` inside an event loop: the loop keeps running while it waits."""
    import asyncio

    began = time.monotonic()
    while not cond():
        if time.monotonic() - began > within:
            raise TimeoutError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(every)
    return time.monotonic() - began
