"""Which quota limits apply to a request: its institution's, its key's and, for a
person's own key, the person's (set by the institution admin within the institution's)."""

from __future__ import annotations

from dataclasses import dataclass

from verbund.config import InstitutionConfig, LimitsConfig
from verbund.coordination import Limit, Seat
from verbund.tenancy._keys import KeyEntry


@dataclass(frozen=True, slots=True)
class PersonQuota:
    requests_per_minute: int = 0
    tokens_per_minute: int = 0


def quota_limits(
    institution: InstitutionConfig,
    key: KeyEntry,
    person: PersonQuota | None = None,
    front_end_person: str = "",
) -> list[Limit]:
    """Only limits that are set (0 means unlimited). ``front_end_person`` is the
    pseudonym of the person behind a front-end's key (from its forwarded user headers),
    whom the institution's ``person_*`` limits then count as well."""
    candidates = [
        Limit(f"institution:{institution.id}", "rpm", institution.requests_per_minute),
        Limit(f"institution:{institution.id}", "tpm", institution.tokens_per_minute),
        Limit(f"institution:{institution.id}", "tpmonth", institution.tokens_per_month),
        Limit(f"key:{key.id}", "rpm", key.requests_per_minute),
        Limit(f"key:{key.id}", "tpm", key.tokens_per_minute),
    ]
    if person is not None and key.person_id:
        candidates += [
            Limit(f"person:{key.person_id}", "rpm", person.requests_per_minute),
            Limit(f"person:{key.person_id}", "tpm", person.tokens_per_minute),
        ]
    if front_end_person and not key.person_id:
        scope = f"person:{front_end_person}"
        candidates.append(Limit(scope, "rpm", institution.person_requests_per_minute))
        candidates.append(Limit(scope, "tpm", institution.person_tokens_per_minute))
    return [lim for lim in candidates if lim.limit > 0]


def token_limits(
    institution: InstitutionConfig,
    key: KeyEntry | None,
    person: PersonQuota | None = None,
    front_end_person: str = "",
) -> list[Limit]:
    """The token limits alone: what batch items are charged against as they run (the
    batch was one request when it was created)."""
    if key is None:
        key = KeyEntry("", institution.id, False)
    limits = quota_limits(institution, key, person, front_end_person)
    return [lim for lim in limits if lim.kind != "rpm"]


def request_limits(
    institution: InstitutionConfig,
    key: KeyEntry,
    person: PersonQuota | None = None,
    front_end_person: str = "",
) -> list[Limit]:
    """The requests-per-minute limits alone: charged before the request's body is read."""
    limits = quota_limits(institution, key, person, front_end_person)
    return [lim for lim in limits if lim.kind == "rpm"]


def seat_limits(institution: InstitutionConfig, key: KeyEntry, limits: LimitsConfig) -> list[Seat]:
    """How many requests the key and the institution may have open at once (0 = any)."""
    candidates = [
        Seat(f"key:{key.id}", limits.max_concurrent_per_key),
        Seat(
            f"institution:{institution.id}",
            institution.max_concurrent_requests or limits.max_concurrent_per_institution,
        ),
    ]
    return [s for s in candidates if s.limit > 0]
