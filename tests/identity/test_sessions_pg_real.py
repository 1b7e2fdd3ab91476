"""Sessions, admin keys and people in a real PostgreSQL shared by two access points: a
session opened at one is valid at the other, a sign-out at one ends it at both, and an
admin key made at one is known at the other."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from harness.services import Postgres
from tests.conftest import ADMIN_KEY, federation_dict
from tests.fakes import FakeBackend, transport_factory
from verbund.config import parse_config
from verbund.gateway import Services, create_app
from verbund.tenancy import Actor, Role

pytestmark = pytest.mark.real


async def test_two_access_points_share_sessions_and_admin_keys(
    tmp_path: Path, pg: Postgres
) -> None:
    apps = []
    for name in ("ap-1", "ap-2"):
        data = federation_dict(tmp_path / name)
        data["gateway"]["name"] = name
        data["store"]["url"] = pg.url
        cfg = parse_config(data)
        fakes = {b.name: FakeBackend(b.name) for s in cfg.sites for b in s.backends}
        apps.append(
            create_app(
                cfg,
                admin_key=ADMIN_KEY,
                transport_factory=transport_factory(fakes),
                background=False,
            )
        )
    one, two = apps
    svc_one: Services = one.state.services
    svc_two: Services = two.state.services
    async with one.router.lifespan_context(one), two.router.lifespan_context(two):
        c1 = httpx.AsyncClient(transport=httpx.ASGITransport(app=one), base_url="http://a")
        c2 = httpx.AsyncClient(transport=httpx.ASGITransport(app=two), base_url="http://a")
        async with c1, c2:
            actor = Actor("person", "u_pg", Role.institution_admin, "uni-a")
            token, session = await svc_one.identity.sessions.create(actor, "test")
            for c in (c1, c2):
                c.cookies.set("verbund_session", token)
            me = (await c2.get("/auth/session")).json()
            assert me["id"] == "u_pg" and me["csrf_token"] == session.csrf
            out = await c1.post("/auth/logout", headers={"x-csrf-token": session.csrf})
            assert out.status_code == 200
            assert (await c2.get("/auth/session")).status_code == 401

            made = await c1.post(
                "/admin/keys",
                json={"role": "auditor", "name": "pg"},
                headers={"authorization": f"Bearer {ADMIN_KEY}"},
            )
            assert made.status_code == 201
            auditor = {"authorization": f"Bearer {made.json()['key']}"}
            # no event bus between these two: the other learns it at its next reload
            assert (await c2.get("/admin/audit", headers=auditor)).status_code == 403
            await svc_two.identity.reload()
            audit = await c2.get("/admin/audit", headers=auditor)
            assert audit.status_code == 200
            assert audit.json()["data"][-1]["role"] == "federation_admin"
            verified = (await c2.get("/admin/audit/verify", headers=auditor)).json()
            assert verified["ok"] is True
