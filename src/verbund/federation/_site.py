"""A compute centre: its policy facts, its lifecycle state and its backends."""

from __future__ import annotations

from dataclasses import dataclass, field

from verbund.config import DataClass, SiteConfig, SiteState
from verbund.federation._backend import Backend


@dataclass(eq=False, slots=True)
class Site:
    config: SiteConfig
    state: SiteState
    backends: list[Backend] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def region(self) -> str:
        return self.config.region

    @property
    def jurisdiction(self) -> str:
        return self.config.jurisdiction

    @property
    def max_data_class(self) -> DataClass:
        return self.config.max_data_class

    @property
    def certifications(self) -> list[str]:
        return self.config.certifications

    @property
    def accepts_new_requests(self) -> bool:
        return self.state is SiteState.active
