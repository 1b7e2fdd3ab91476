"""Institutions (tenants) and their API keys."""

from verbund.tenancy._institutions import InstitutionRegistry
from verbund.tenancy._keys import CreatedKey, KeyEntry, KeyService, hash_key, new_secret
from verbund.tenancy._principal import Principal
from verbund.tenancy._quotas import (
    PersonQuota,
    quota_limits,
    request_limits,
    seat_limits,
    token_limits,
)
from verbund.tenancy._roles import ROLE_PRECEDENCE, Actor, Permission, Role, can, highest_role

__all__ = [
    "ROLE_PRECEDENCE",
    "Actor",
    "CreatedKey",
    "InstitutionRegistry",
    "KeyEntry",
    "KeyService",
    "Permission",
    "PersonQuota",
    "Principal",
    "Role",
    "can",
    "hash_key",
    "highest_role",
    "new_secret",
    "quota_limits",
    "request_limits",
    "seat_limits",
    "token_limits",
]
