"""Which quota limits apply to a request: its institution's and its key's."""

from __future__ import annotations

from verbund.config import InstitutionConfig
from verbund.coordination import Limit
from verbund.tenancy._keys import KeyEntry


def quota_limits(institution: InstitutionConfig, key: KeyEntry) -> list[Limit]:
    """Only limits that are set (0 means unlimited)."""
    candidates = [
        Limit(f"institution:{institution.id}", "rpm", institution.requests_per_minute),
        Limit(f"institution:{institution.id}", "tpm", institution.tokens_per_minute),
        Limit(f"institution:{institution.id}", "tpmonth", institution.tokens_per_month),
        Limit(f"key:{key.id}", "rpm", key.requests_per_minute),
        Limit(f"key:{key.id}", "tpm", key.tokens_per_minute),
    ]
    return [lim for lim in candidates if lim.limit > 0]


def token_limits(institution: InstitutionConfig, key: KeyEntry | None) -> list[Limit]:
    """The token limits alone: what batch items are charged against as they run (the
    batch was one request when it was created)."""
    if key is None:
        key = KeyEntry("", institution.id, False)
    return [lim for lim in quota_limits(institution, key) if lim.kind != "rpm"]
