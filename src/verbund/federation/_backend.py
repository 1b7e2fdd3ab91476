"""A model server at a site, with the live state the router and health checks keep."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from verbund.config import BackendConfig

if TYPE_CHECKING:
    from verbund.federation._site import Site


@dataclass(eq=False, slots=True)
class Backend:
    """Runtime view of one backend. Mutated only by the proxy and the health tracker."""

    config: BackendConfig
    site: Site
    outstanding: int = 0
    healthy: bool = True
    consecutive_failures: int = 0
    ejected_until: float = 0.0
    ejections: int = 0
    ttft_ewma: float | None = None
    last_error: str = ""
    last_probe_ok: float = 0.0
    served: int = 0
    failures: int = field(default=0)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def url(self) -> str:
        return self.config.url

    @property
    def kind(self) -> str:
        return self.config.kind

    def serves(self, model: str) -> bool:
        return model in self.config.models

    def available(self, now: float) -> bool:
        """Healthy and not ejected: may receive new requests (site state aside)."""
        return self.healthy and now >= self.ejected_until
