"""Signing in through the real OpenID provider (npm oidc-provider): the whole flow."""

from __future__ import annotations

import pytest

from tests.identity.conftest import People

pytestmark = pytest.mark.real


async def test_member_signs_in_and_out(people: People) -> None:
    done = await people.sign_in("ada", next_path="/console/keys")
    assert done.headers["location"] == "/console/keys"
    cookie = done.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie
    me = (await people.client.get("/auth/session")).json()
    assert me["role"] == "member" and me["institution"] == "uni-a"
    assert me["display_name"] == "Ada Lovelace"
    assert me["id"] != people.idp.person("ada").sub  # pseudonymous, not the provider's
    out = await people.client.post("/auth/logout", headers=await people.csrf())
    assert out.status_code == 200 and out.json()["signed_out"] is True
    assert out.json()["end_session_url"].startswith(people.idp.issuer)
    assert (await people.client.get("/auth/session")).status_code == 401
