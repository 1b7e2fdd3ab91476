"""A compute centre: its policy facts, its lifecycle state and its backends."""

from __future__ import annotations

from dataclasses import dataclass, field

from verbund.config import DataClass, SiteConfig, SiteState
from verbund.federation._backend import Backend
from verbund.federation._catalogue import OnDemandModel

_RANK = {SiteState.active: 0, SiteState.draining: 1, SiteState.maintenance: 2}


@dataclass(eq=False, slots=True)
class Site:
    config: SiteConfig
    own_state: SiteState  # set through this federation's admin API (store + bus)
    backends: list[Backend] = field(default_factory=list)
    # what the site's agent announces in its catalogue (its operator's decision)
    announced_state: SiteState = SiteState.active
    # models its agent starts on demand, with their status as last announced
    on_demand: dict[str, OnDemandModel] = field(default_factory=dict)
    # the site's agent signs receipts with a key this access point takes (announced in
    # its catalogue, matching [trust.partners] or none configured there) and relays
    # the site's inference (ingress = "agent"): only then can it sign for a request
    signs_receipts: bool = False

    @property
    def state(self) -> SiteState:
        """The effective state: the more restrictive of the federation's and the site's
        own decision, so either side can take the site out and neither overrides the
        other."""
        own, announced = self.own_state, self.announced_state
        return own if _RANK[own] >= _RANK[announced] else announced

    @state.setter
    def state(self, value: SiteState) -> None:
        self.own_state = value

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
