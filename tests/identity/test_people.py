"""People who sign in: a new person and a changed role are audited, a repeat is not."""

from __future__ import annotations

import json

from tests.conftest import Gateway
from verbund.identity import Identity
from verbund.tenancy import Role


async def test_a_new_person_and_a_changed_role_are_audited(gw: Gateway) -> None:
    people = gw.services.identity.people
    ada = Identity("ada", "uni-a", Role.member, None, "Ada")
    first = await people.signed_in("https://idp.test", "test", ada)
    await people.signed_in("https://idp.test", "test", ada)  # unchanged: not audited
    await people.signed_in(
        "https://idp.test", "test", Identity("ada", None, Role.site_operator, "west", "Ada")
    )
    rows = [r for r in await gw.services.audit.entries() if r.action == "person.role"]
    seen = [(r.target, json.loads(r.before), json.loads(r.after)) for r in rows]
    assert seen == [
        (first.id, None, {"role": "member", "institution": "uni-a", "site": None}),
        (
            first.id,
            {"role": "member", "institution": "uni-a", "site": None},
            {"role": "site_operator", "institution": None, "site": "west"},
        ),
    ]
    assert "ada" not in first.id  # the provider's subject is pseudonymised
