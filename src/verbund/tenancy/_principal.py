"""Who is calling: an institution's key and the institution it belongs to."""

from __future__ import annotations

from dataclasses import dataclass

from verbund.config import InstitutionConfig
from verbund.tenancy._keys import KeyEntry


@dataclass(frozen=True, slots=True)
class Principal:
    key: KeyEntry
    institution: InstitutionConfig

    @property
    def key_id(self) -> str:
        return self.key.id
