"""Signing a demo person in through the real identity provider, as a browser would.

:func:`sign_in` (an ``httpx.AsyncClient``, which may have an in-process access point
mounted) walks the whole authorization code flow: the access point's ``/auth/login``,
the provider's login page, its form, the redirect back to ``/auth/callback``. The client
then holds the session cookie; :func:`csrf_headers` gives the header every
state-changing call needs.
"""

from __future__ import annotations

import re
from collections.abc import Generator
from typing import Any
from urllib.parse import urljoin

import httpx

_FORM_ACTION = re.compile(r'<form method=post action="([^"]+)"')
# a page that submits itself (the provider ending its session of the person before)
_AUTO_FORM = re.compile(r'<form method="post" action="([^"]+)">(.*?)</form>', re.S)
_HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)"')
# one step of the flow: (method, url, form) out, the response in
Step = tuple[str, str, dict[str, str] | None]


class SignInError(RuntimeError):
    """The flow did not end at the access point's callback with a session."""


def _flow(
    base_url: str, login: str, password: str, provider: str | None, next_path: str
) -> Generator[Step, httpx.Response, str]:
    """The steps up to the provider's redirect back; returns the callback URL (with the
    ``code`` and ``state``), not yet requested."""
    # prompt=login: the provider asks again even if this client signed in there before
    query = f"?prompt=login&next={next_path}" + (f"&provider={provider}" if provider else "")
    response = yield ("GET", f"{base_url}/auth/login{query}", None)
    for _ in range(10):  # redirects within the provider, up to its login page
        if response.status_code not in (302, 303):
            break
        response = yield ("GET", urljoin(str(response.url), response.headers["location"]), None)
    match = _FORM_ACTION.search(response.text)
    if response.status_code != 200 or match is None:
        raise SignInError(f"no login page: HTTP {response.status_code} at {response.url}")
    action = urljoin(str(response.url), match.group(1))
    response = yield ("POST", action, {"login": login, "password": password})
    for _ in range(10):  # back through the provider to the access point's callback
        auto = _AUTO_FORM.search(response.text) if response.status_code == 200 else None
        if auto is not None:  # what a browser's script would submit
            form = dict(_HIDDEN.findall(auto.group(2)))
            response = yield ("POST", urljoin(str(response.url), auto.group(1)), form)
            continue
        if response.status_code not in (302, 303):
            break
        target = urljoin(str(response.url), response.headers["location"])
        if target.startswith(f"{base_url}/auth/callback"):
            return target
        response = yield ("GET", target, None)
    raise SignInError(f"the sign-in did not return: HTTP {response.status_code} {response.text}")


async def authorize(
    client: httpx.AsyncClient,
    base_url: str,
    login: str,
    password: str,
    *,
    provider: str | None = None,
    next_path: str = "/console",
) -> str:
    """Everything up to the provider's redirect back: the callback URL, not requested."""
    flow = _flow(base_url.rstrip("/"), login, password, provider, next_path)
    step = next(flow)
    try:
        while True:
            method, url, form = step
            response = await client.request(method, url, data=form, follow_redirects=False)
            step = flow.send(response)
    except StopIteration as done:
        callback: str = done.value
        return callback


async def sign_in(
    client: httpx.AsyncClient,
    base_url: str,
    login: str,
    password: str,
    *,
    provider: str | None = None,
    next_path: str = "/console",
) -> httpx.Response:
    """Sign ``login`` in; returns the callback's answer (its ``location`` is ``next``)."""
    callback = await authorize(
        client, base_url, login, password, provider=provider, next_path=next_path
    )
    response = await client.get(callback, follow_redirects=False)
    if response.status_code != 303:
        raise SignInError(f"callback answered {response.status_code}: {response.text}")
    return response


async def csrf_headers(client: httpx.AsyncClient, base_url: str) -> dict[str, str]:
    """The ``X-CSRF-Token`` header of the client's session."""
    body: dict[str, Any] = (await client.get(f"{base_url.rstrip('/')}/auth/session")).json()
    return {"x-csrf-token": str(body["csrf_token"])}
