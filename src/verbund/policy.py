"""Data policy: which sites may receive a request at all.

Policy is a hard filter applied before routing. It never falls back: a site that is
excluded stays excluded, and the caller learns which constraint excluded it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from verbund.config import DataClass, InstitutionConfig
from verbund.errors import BadRequest

__all__ = ["RequestPolicy", "SiteFacts", "exclusion_reason", "request_data_class", "split_sites"]

DATA_CLASS_HEADER = "x-verbund-data-class"


class SiteFacts(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def region(self) -> str: ...
    @property
    def jurisdiction(self) -> str: ...
    @property
    def max_data_class(self) -> DataClass: ...
    @property
    def certifications(self) -> Sequence[str]: ...


S = TypeVar("S", bound=SiteFacts)


@dataclass(frozen=True, slots=True)
class RequestPolicy:
    """What a single request is allowed: derived from its key, institution and headers."""

    data_class: DataClass
    allowed_sites: frozenset[str] = frozenset()
    allowed_regions: frozenset[str] = frozenset()
    allowed_jurisdictions: frozenset[str] = frozenset()
    required_certifications: frozenset[str] = frozenset()

    @classmethod
    def for_institution(cls, inst: InstitutionConfig, data_class: DataClass) -> RequestPolicy:
        return cls(
            data_class=data_class,
            allowed_sites=frozenset(inst.allowed_sites),
            allowed_regions=frozenset(inst.allowed_regions),
            allowed_jurisdictions=frozenset(inst.allowed_jurisdictions),
            required_certifications=frozenset(inst.required_certifications),
        )


def request_data_class(default: DataClass, header: str | None) -> DataClass:
    """The higher of the key's default and the header; a header can only raise the class."""
    if header is None or header == "":
        return default
    try:
        asked = DataClass(header.strip().lower())
    except ValueError:
        allowed = ", ".join(d.value for d in DataClass)
        raise BadRequest(
            f"X-Verbund-Data-Class must be one of {allowed}.",
            code="invalid_data_class",
            param="X-Verbund-Data-Class",
        ) from None
    return asked if asked.rank > default.rank else default


def exclusion_reason(site: SiteFacts, policy: RequestPolicy) -> str | None:
    """Why ``site`` may not take this request, or None when it may."""
    if site.max_data_class.rank < policy.data_class.rank:
        return (
            f"data class {policy.data_class.value} exceeds the site's "
            f"max_data_class {site.max_data_class.value}"
        )
    if policy.allowed_sites and site.name not in policy.allowed_sites:
        return "not among the institution's allowed_sites"
    if policy.allowed_regions and site.region not in policy.allowed_regions:
        return f"region {site.region or '-'} not among the institution's allowed_regions"
    if policy.allowed_jurisdictions and site.jurisdiction not in policy.allowed_jurisdictions:
        return (
            f"jurisdiction {site.jurisdiction or '-'} not among the institution's "
            "allowed_jurisdictions"
        )
    missing = policy.required_certifications.difference(site.certifications)
    if missing:
        return f"lacks the certification(s) the institution requires: {', '.join(sorted(missing))}"
    return None


def split_sites(sites: Iterable[S], policy: RequestPolicy) -> tuple[list[S], dict[str, str]]:
    """Partition sites into the compliant ones and a map of excluded site -> reason."""
    allowed: list[S] = []
    excluded: dict[str, str] = {}
    for site in sites:
        reason = exclusion_reason(site, policy)
        if reason is None:
            allowed.append(site)
        else:
            excluded[site.name] = reason
    return allowed, excluded


def describe_exclusions(excluded: dict[str, str], unavailable: Sequence[tuple[str, str]]) -> str:
    """One sentence per site, for the error a client sees when nothing is left."""
    parts = [f"{name}: {why}" for name, why in sorted(excluded.items())]
    parts += [f"{name}: {why}" for name, why in unavailable]
    return "; ".join(parts)
