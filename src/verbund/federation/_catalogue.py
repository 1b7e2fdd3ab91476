"""A site's catalogue as its agent announces it, and what an access point takes from it.

The wire format (:class:`SiteCatalogue`) is defined once, here: the agent builds it, the
access point parses it. Parsing ignores fields it does not know (an agent newer than the
access point) but validates every field it uses with the federation config's own models,
so an announced backend is checked exactly like one in a config file.

:func:`accepted` is the access point's side of the bargain, a pure decision: what of a
site's announcement this access point takes, given its own ``[[sites]]`` entry — the
operator's allow-list of models (``accept_models``), a ``max_data_class`` that caps the
announced one, and facts (region, jurisdiction, certifications) the access point's
config sets explicitly and that therefore win. Backends are rewritten for the site's
ingress: with ``ingress = "agent"`` they are reached at the agent's relay.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

from verbund.config import (
    BackendConfig,
    DataClass,
    ModelConfig,
    PriceList,
    SiteConfig,
    SiteState,
)

__all__ = [
    "AcceptedCatalogue",
    "AnnouncedBackend",
    "AnnouncedModel",
    "AnnouncedSite",
    "OnDemandModel",
    "SiteCatalogue",
    "accepted",
]

_WIRE = ConfigDict(extra="ignore", frozen=True)


class AnnouncedSite(BaseModel):
    model_config = _WIRE

    name: str
    region: str = ""
    jurisdiction: str = ""
    max_data_class: DataClass = DataClass.public
    certifications: list[str] = []
    state: SiteState = SiteState.active
    # the agent's Ed25519 public key (base64; "" = the agent does not sign): checkpoints,
    # usage statements and receipts it signs verify with it (docs/trust.md)
    signing_key: str = ""


class AnnouncedModel(ModelConfig):
    model_config = _WIRE

    data_classes: list[DataClass] = []  # [] = every class up to the site's max
    on_demand: bool = False  # the agent starts instances when demand arrives
    # on demand: "ready" | "starting" | "stopped"; "" for a model with fixed backends
    status: str = ""
    expected_start_seconds: float | None = None  # on demand: a start's recent duration


class AnnouncedBackend(BackendConfig):
    model_config = _WIRE

    healthy: bool | None = None  # the agent's probes: up, down, or not probed yet


class SiteCatalogue(BaseModel):
    """What ``GET /catalogue`` of an agent answers."""

    model_config = _WIRE

    site: AnnouncedSite
    models: list[AnnouncedModel] = []
    backends: list[AnnouncedBackend] = []
    prices: PriceList | None = None


@dataclass(frozen=True, slots=True)
class OnDemandModel:
    """A model the site starts on demand, as the access point routes and reports it."""

    status: str  # ready | starting | stopped
    expected_start_seconds: float


@dataclass(frozen=True, slots=True)
class AcceptedCatalogue:
    """What this access point applies of one site's catalogue."""

    site: SiteConfig  # the site's facts as routing sees them
    state: SiteState  # the site's own lifecycle state
    models: list[ModelConfig]
    backends: list[BackendConfig]
    health: dict[str, bool | None]  # backend -> the agent's verdict
    on_demand: dict[str, OnDemandModel]  # model -> its on-demand status at the site
    refused: list[str]  # what was left out, and why (for logs and /status)


_FACTS = ("region", "jurisdiction", "certifications")


def accepted(
    config: SiteConfig,
    catalogue: SiteCatalogue,
    relay_url: Callable[[str], str] | None = None,
) -> AcceptedCatalogue:
    """The part of ``catalogue`` that ``config`` (this access point's ``[[sites]]`` entry)
    lets in. ``relay_url(backend)`` is the agent's relay base for ``ingress = "agent"``."""
    announced = catalogue.site
    refused: list[str] = []
    facts: dict[str, object] = {
        f: getattr(announced, f) for f in _FACTS if f not in config.model_fields_set
    }
    max_class = announced.max_data_class
    if "max_data_class" in config.model_fields_set and config.max_data_class.rank < max_class.rank:
        max_class = config.max_data_class  # this access point trusts the site less
    facts["max_data_class"] = max_class
    site = config.model_copy(update=facts)
    allow = set(config.accept_models)
    models: list[ModelConfig] = []
    on_demand: dict[str, OnDemandModel] = {}
    for m in catalogue.models:
        if allow and m.name not in allow:
            refused.append(f"model {m.name!r}: not in accept_models")
            continue
        models.append(
            ModelConfig(
                **m.model_dump(
                    exclude={"data_classes", "on_demand", "status", "expected_start_seconds"}
                )
            )
        )
        if m.on_demand:
            expected = m.expected_start_seconds or 30.0
            on_demand[m.name] = OnDemandModel(m.status or "stopped", expected)
    served = {m.name for m in models}
    backends: list[BackendConfig] = []
    health: dict[str, bool | None] = {}
    for b in catalogue.backends:
        keep = [m for m in b.models if m in served]
        if not keep:
            refused.append(f"backend {b.name!r}: serves no accepted model")
            continue
        fields = b.model_dump(exclude={"healthy", "launch"})
        fields["models"] = keep
        if relay_url is not None:  # ingress = "agent": the agent holds the backend's key
            fields.update(url=relay_url(b.name), api_key_env=None, metrics_url=None)
        backends.append(BackendConfig(**fields))
        health[b.name] = b.healthy
    return AcceptedCatalogue(site, announced.state, models, backends, health, on_demand, refused)
