"""Fixtures for sign-in tests: the real demo OpenID provider and an in-process access
point that trusts it, reached by one client that also reaches the provider."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.idp import Idp
from harness.people import authorize, csrf_headers, sign_in
from tests.conftest import ADMIN_KEY, Gateway, federation_dict
from tests.fakes import FakeBackend, transport_factory
from verbund.config import parse_config
from verbund.demo_idp import DemoPerson, demo_people
from verbund.gateway import Services, create_app

BASE = "http://127.0.0.1:9"  # never reaches the network: the client mounts the app there


@pytest.fixture
def idp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Idp]:
    # the demo people, and one from an institution that is not a member
    outsider = DemoPerson("eve", "eve-password", "<b>evil</b>-u", "member", "Eve")
    with Idp(tmp_path / "idp", [BASE], people=[*demo_people("west"), outsider]) as provider:
        for k, v in provider.env().items():
            monkeypatch.setenv(k, v)
        yield provider


class People(Gateway):
    """An in-process access point trusting the real provider; ``client`` reaches both."""

    idp: Idp

    async def sign_in(self, login: str, next_path: str = "/console") -> httpx.Response:
        p = self.idp.person(login)
        return await sign_in(self.client, BASE, p.login, p.password, next_path=next_path)

    async def authorize(self, login: str, next_path: str = "/console") -> str:
        """The flow up to the provider's redirect back: the callback URL, not requested."""
        p = self.idp.person(login)
        return await authorize(self.client, BASE, p.login, p.password, next_path=next_path)

    async def csrf(self) -> dict[str, str]:
        return await csrf_headers(self.client, BASE)


@asynccontextmanager
async def people_gateway(tmp_path: Path, idp: Idp, **auth: Any) -> AsyncIterator[People]:
    data = federation_dict(tmp_path)
    data["auth"] = {"oidc": [idp.settings(["uni-a", "uni-b"], ["west", "sued", "ost"])], **auth}
    cfg = parse_config(data)
    fakes = {b.name: FakeBackend(b.name) for s in cfg.sites for b in s.backends}
    app = create_app(
        cfg, admin_key=ADMIN_KEY, transport_factory=transport_factory(fakes), background=False
    )
    svc: Services = app.state.services
    async with app.router.lifespan_context(app):
        keys = {
            i.id: (await svc.keys.create(i.id, "test", actor="test")).key for i in cfg.institutions
        }
        mounts = {BASE: httpx.ASGITransport(app=app), "all://": httpx.AsyncHTTPTransport()}
        async with httpx.AsyncClient(mounts=mounts, base_url=BASE, trust_env=False) as client:
            gw = People(client, svc, fakes, keys, app)
            gw.idp = idp
            yield gw


@pytest.fixture
async def people(tmp_path: Path, idp: Idp) -> AsyncIterator[People]:
    async with people_gateway(tmp_path, idp) as gw:
        yield gw
