"""Who is calling: an institution's key and the institution it belongs to."""

from __future__ import annotations

from dataclasses import dataclass

from verbund.config import InstitutionConfig
from verbund.tenancy._keys import KeyEntry
from verbund.tenancy._quotas import PersonQuota


@dataclass(frozen=True, slots=True)
class Principal:
    key: KeyEntry
    institution: InstitutionConfig
    person: PersonQuota | None = None  # the quota of the person whose own key this is

    @property
    def key_id(self) -> str:
        return self.key.id
