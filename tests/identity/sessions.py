"""A session minted straight in the store, for fast tests of what sessions may do (the
real sign-in that makes them is tested against the real provider)."""

from __future__ import annotations

from tests.conftest import Gateway
from verbund.tenancy import Actor, Role


async def signed_in(
    gw: Gateway,
    role: Role = Role.member,
    institution: str | None = "uni-a",
    site: str | None = None,
    person: str = "u_person1",
) -> dict[str, str]:
    """Gives ``gw.client`` a session cookie for this person; returns the CSRF header."""
    actor = Actor("person", person, role, institution, site)
    token, session = await gw.services.identity.sessions.create(actor, "test")
    gw.client.cookies.set("verbund_session", token)
    return {"x-csrf-token": session.csrf}
