"""From an ID token's claims to a person in the federation: institution, role, site.

Pure: the provider's mapping and the member institutions in, an :class:`Identity` or a
:class:`Refusal` out. Which claim names the home institution and how entitlements map to
roles differs between providers (an institution's own IdP, a SAML-to-OIDC proxy in
front of DFN-AAI), so both come from the provider's config (docs/identity.md).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from verbund.config import OidcProviderConfig
from verbund.tenancy import Role, highest_role

__all__ = ["Identity", "Refusal", "map_claims"]

# roles that act for the federation or a site, not for a member institution: people
# holding them may come from an organisation that is not a member (a computing centre)
_FEDERATION_ROLES = (Role.site_operator, Role.auditor, Role.federation_admin)


@dataclass(frozen=True, slots=True)
class Identity:
    subject: str  # the provider's ``sub``; pseudonymised before it is stored
    institution: str | None
    role: Role
    site: str | None
    display_name: str


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a correctly signed-in person may not use this federation (shown as a page)."""

    reason: str
    institution: str


def _institution_value(provider: OidcProviderConfig, claims: Mapping[str, Any]) -> str:
    if provider.institution_claim == "email":
        email = claims.get("email")
        if not isinstance(email, str) or "@" not in email:
            return ""
        if claims.get("email_verified") is False:
            return ""
        return email.rsplit("@", 1)[1].lower()
    value = claims.get(provider.institution_claim)
    if isinstance(value, list):  # some proxies release single-valued attributes as lists
        value = value[0] if len(value) == 1 else None
    return value.strip().lower() if isinstance(value, str) else ""


def _entitlements(provider: OidcProviderConfig, claims: Mapping[str, Any]) -> list[str]:
    value = claims.get(provider.roles_claim)
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def map_claims(
    provider: OidcProviderConfig, claims: Mapping[str, Any], members: Collection[str]
) -> Identity | Refusal:
    """Institution from the configured claim (mapped, else taken as an id), the most
    privileged role any entitlement maps to (``member`` when none does)."""
    raw = _institution_value(provider, claims)
    institution: str | None = provider.institutions.get(raw, raw) or None
    roles: dict[Role, str | None] = {}
    for value in _entitlements(provider, claims):
        target = provider.roles.get(value)
        if target is None:
            continue
        name, _, where = target.partition(":")
        roles.setdefault(Role(name), where or None)
    role = highest_role(set(roles))
    site = roles.get(role) if role is Role.site_operator else None
    if institution not in members:
        institution = None
        if role not in _FEDERATION_ROLES:
            shown = raw or "(none given)"
            return Refusal(
                f"Your home institution {shown} is not a member of this federation.", shown
            )
    shown_name = claims.get(provider.name_claim)
    return Identity(
        subject=str(claims["sub"]),
        institution=institution,
        role=role,
        site=site,
        display_name=shown_name[:256] if isinstance(shown_name, str) else "",
    )
