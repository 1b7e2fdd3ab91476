"""Who may do what: the roles of a federation of partners, and one pure decision.

Every caller of the admin and console API is an :class:`Actor`: a person signed in with
the home institution's account, a role-scoped admin key, or the bootstrap admin key.
:func:`can` decides from the actor, the permission and the target alone (the institution
or site an action touches), so the whole role model is tested without HTTP and the
routes carry no checks of their own.

Scopes: an ``institution_admin`` (and a ``member``, for what members may do) acts only
on its own institution, a ``site_operator`` only on its own site; a target of ``None``
means "federation-wide" and is granted only to roles that are not scoped for that
permission. The ``auditor`` reads everything and changes nothing; the
``federation_admin`` (and the bootstrap key) may do everything but have keys of their own
outside their own institution (a person of no member institution has none).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal

__all__ = ["ROLE_PRECEDENCE", "Actor", "Permission", "Role", "can", "highest_role"]


class Role(enum.StrEnum):
    member = "member"
    institution_admin = "institution_admin"
    site_operator = "site_operator"
    auditor = "auditor"
    federation_admin = "federation_admin"


# when an identity provider's claims map to several roles, the first of these wins
ROLE_PRECEDENCE = (
    Role.federation_admin,
    Role.institution_admin,
    Role.site_operator,
    Role.auditor,
    Role.member,
)


def highest_role(roles: set[Role]) -> Role:
    return next((r for r in ROLE_PRECEDENCE if r in roles), Role.member)


class Permission(enum.StrEnum):
    """What a route does; the target it names is an institution id or a site name."""

    sites_read = "sites.read"  # target: site (None = all sites)
    site_lifecycle = "sites.lifecycle"  # target: site
    access_point_drain = "access_point.drain"
    keys_read = "keys.read"  # target: institution (None = all)
    keys_write = "keys.write"  # create/revoke/quota of institution keys; target: institution
    admin_keys_write = "admin_keys.write"  # role-scoped admin keys
    institutions_read = "institutions.read"  # target: institution (None = all)
    institutions_write = "institutions.write"  # policy, quotas, budgets of an institution
    people_read = "people.read"  # target: institution
    people_write = "people.write"  # per-person quotas; target: institution
    usage_read = "usage.read"  # target: institution (None = all)
    budgets_read = "budgets.read"  # target: institution (None = all)
    settlement_read = "settlement.read"
    audit_read = "audit.read"
    audit_checkpoint = "audit.checkpoint"  # exchange signed checkpoints of the audit chain
    jobs_read = "jobs.read"
    jobs_write = "jobs.write"
    own_keys = "me.keys"  # a person's own keys and usage; target: the person's institution


_Scope = Literal["institution", "site", "none"]

_SCOPE: dict[Permission, _Scope] = {
    Permission.sites_read: "site",
    Permission.site_lifecycle: "site",
    Permission.keys_read: "institution",
    Permission.keys_write: "institution",
    Permission.institutions_read: "institution",
    Permission.people_read: "institution",
    Permission.people_write: "institution",
    Permission.usage_read: "institution",
    Permission.budgets_read: "institution",
    Permission.own_keys: "institution",
}

_READ_ONLY = frozenset(
    {
        Permission.sites_read,
        Permission.keys_read,
        Permission.institutions_read,
        Permission.people_read,
        Permission.usage_read,
        Permission.budgets_read,
        Permission.settlement_read,
        Permission.audit_read,
        Permission.jobs_read,
    }
)

_GRANTS: dict[Role, frozenset[Permission]] = {
    Role.member: frozenset({Permission.own_keys}),
    Role.institution_admin: frozenset(
        {
            Permission.own_keys,
            Permission.keys_read,
            Permission.keys_write,
            Permission.institutions_read,
            Permission.people_read,
            Permission.people_write,
            Permission.usage_read,
            Permission.budgets_read,
        }
    ),
    Role.site_operator: frozenset(
        {
            Permission.own_keys,
            Permission.sites_read,
            Permission.site_lifecycle,
            Permission.audit_checkpoint,
        }
    ),
    Role.auditor: _READ_ONLY | {Permission.own_keys, Permission.audit_checkpoint},
    Role.federation_admin: frozenset(Permission),
}


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts. ``id`` is what the audit log names: a person's pseudonymous subject,
    a key id, or ``admin`` for the bootstrap key."""

    kind: Literal["person", "key", "bootstrap"]
    id: str
    role: Role
    institution: str | None = None
    site: str | None = None  # the site a site_operator runs

    @property
    def audit_name(self) -> str:
        """``<id> (<role>)``: the actor as every audit entry names it."""
        return f"{self.id} ({self.role.value})"


def can(actor: Actor, permission: Permission, target: str | None = None) -> bool:
    """Whether ``actor`` may do ``permission`` to ``target`` (see the module docstring)."""
    if permission not in _GRANTS[actor.role]:
        return False
    if permission is Permission.own_keys:  # one's own: in one's own institution, any role
        return actor.institution is not None and target == actor.institution
    if actor.role is Role.federation_admin:
        return True
    scope = _SCOPE.get(permission, "none")
    if scope == "institution" and actor.role in (Role.member, Role.institution_admin):
        return actor.institution is not None and target == actor.institution
    if scope == "site" and actor.role is Role.site_operator:
        return actor.site is not None and target == actor.site
    return True
