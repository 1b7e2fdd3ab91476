"""Institutions (tenants) and their API keys."""

from verbund.tenancy._institutions import InstitutionRegistry
from verbund.tenancy._keys import CreatedKey, KeyEntry, KeyService, hash_key, new_secret
from verbund.tenancy._principal import Principal
from verbund.tenancy._quotas import quota_limits, request_limits, seat_limits, token_limits

__all__ = [
    "CreatedKey",
    "InstitutionRegistry",
    "KeyEntry",
    "KeyService",
    "Principal",
    "hash_key",
    "new_secret",
    "quota_limits",
    "request_limits",
    "seat_limits",
    "token_limits",
]
