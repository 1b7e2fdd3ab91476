"""An in-process access point with the console, and people signed in through the identity
service's own functions (the sign-in itself is tested against a real provider elsewhere)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Gateway, GatewayFactory, federation_dict
from verbund.config import parse_config
from verbund.identity import Identity
from verbund.tenancy import Role

ISSUER = "https://idp.test"
EVIL = '<script>alert("pwned")</script>'


def console_config(tmp_path: Path) -> Any:
    data = federation_dict(tmp_path)
    data["institutions"][0]["name"] = f"Universität A {EVIL}"
    data["institutions"][0]["budget_tokens_per_month"] = 1000
    data["models"][0]["description"] = f"a small chat model {EVIL}"
    data["models"][0]["license"] = "Apache-2.0"
    return parse_config(data)


SignIn = Callable[..., Awaitable[httpx.AsyncClient]]


@pytest.fixture
async def console(gateway_factory: GatewayFactory, tmp_path: Path) -> AsyncIterator[Gateway]:
    async with gateway_factory(console_config(tmp_path)) as g:
        yield g


@pytest.fixture
async def sign_in(console: Gateway) -> AsyncIterator[SignIn]:
    """A client with a session cookie for a person of the given role."""
    clients: list[httpx.AsyncClient] = []

    async def make(
        role: Role, institution: str | None = "uni-a", site: str | None = None, name: str = "Ada"
    ) -> httpx.AsyncClient:
        svc = console.services
        subject = f"{role.value}-{institution}-{site}-{len(clients)}"
        actor = await svc.identity.people.signed_in(
            ISSUER, "test", Identity(subject, institution, role, site, name)
        )
        token, _ = await svc.identity.sessions.create(actor, "test")
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=console.app),
            base_url="http://ap",
            cookies={"verbund_session": token},
        )
        clients.append(client)
        return client

    yield make
    for c in clients:
        await c.aclose()


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "no CSRF token on the page"
    return found.group(1)
