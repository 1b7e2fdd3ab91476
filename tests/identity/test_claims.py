"""Claims to institution and role: the provider's mapping, pure."""

from __future__ import annotations

from typing import Any

from verbund.config import OidcProviderConfig
from verbund.identity import Identity, Refusal, map_claims
from verbund.tenancy import Role

ENT = "urn:mace:dir:entitlement:verbund:"
MEMBERS = ["uni-a", "uni-b"]


def provider(**kw: Any) -> OidcProviderConfig:
    base: dict[str, Any] = {
        "issuer": "https://proxy.example",
        "client_id": "verbund",
        "institutions": {"uni-a.de": "uni-a"},
        "roles": {
            ENT + "admin": "institution_admin",
            ENT + "audit": "auditor",
            ENT + "op-west": "site_operator:west",
        },
    }
    return OidcProviderConfig.model_validate({**base, **kw})


def test_member_by_schac_home_organization() -> None:
    got = map_claims(provider(), {"sub": "s1", "schac_home_organization": "UNI-A.de"}, MEMBERS)
    assert got == Identity("s1", "uni-a", Role.member, None, "")


def test_unmapped_value_is_taken_as_the_institution_id() -> None:
    got = map_claims(provider(), {"sub": "s", "schac_home_organization": "uni-b"}, MEMBERS)
    assert isinstance(got, Identity) and got.institution == "uni-b"


def test_most_privileged_entitlement_wins_and_unknown_ones_are_ignored() -> None:
    claims = {
        "sub": "s",
        "schac_home_organization": "uni-a.de",
        "eduperson_entitlement": [ENT + "audit", "urn:other", ENT + "admin"],
        "name": "Grace",
    }
    got = map_claims(provider(), claims, MEMBERS)
    assert got == Identity("s", "uni-a", Role.institution_admin, None, "Grace")


def test_site_operator_gets_its_site_and_may_come_from_a_non_member() -> None:
    claims = {
        "sub": "s",
        "schac_home_organization": "rechenzentrum.de",
        "eduperson_entitlement": ENT + "op-west",  # a single value as a string
    }
    got = map_claims(provider(), claims, MEMBERS)
    assert got == Identity("s", None, Role.site_operator, "west", "")


def test_non_member_is_refused_with_the_reason() -> None:
    got = map_claims(provider(), {"sub": "s", "schac_home_organization": "evil.edu"}, MEMBERS)
    assert isinstance(got, Refusal) and "evil.edu" in got.reason
    assert isinstance(map_claims(provider(), {"sub": "s"}, MEMBERS), Refusal)


def test_email_domain_as_institution_only_when_verified() -> None:
    p = provider(institution_claim="email")
    ok = map_claims(p, {"sub": "s", "email": "x@Uni-A.de", "email_verified": True}, MEMBERS)
    assert isinstance(ok, Identity) and ok.institution == "uni-a"
    unverified = {"sub": "s", "email": "x@uni-a.de", "email_verified": False}
    assert isinstance(map_claims(p, unverified, MEMBERS), Refusal)


def test_groups_claim_is_configurable() -> None:
    p = provider(roles_claim="groups", roles={"verbund-auditors": "auditor"})
    claims = {"sub": "s", "schac_home_organization": "uni-a.de", "groups": ["verbund-auditors"]}
    got = map_claims(p, claims, MEMBERS)
    assert isinstance(got, Identity) and got.role is Role.auditor
