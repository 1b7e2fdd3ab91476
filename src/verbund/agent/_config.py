"""One site's agent config (``site.toml``): the site, the agent, who may call it, and
what the site offers.

The site's offer — backends, models, prices, runner — uses the federation config's own
models (:mod:`verbund.config`), so a backend reads the same in ``site.toml`` as under
``[[sites.backends]]`` of a federation config. Credentials are never in the file: each
``key_env`` names an environment variable. :func:`load_site_config` reports every
problem at once with its field path, like ``verbund check``.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from verbund.agent._launch_spec import LaunchSpec, SiteCapacity, capacity_problems
from verbund.config import (
    BackendConfig,
    DataClass,
    EnvName,
    Listening,
    ModelConfig,
    Name,
    PriceList,
    RoutingConfig,
    RunnerConfig,
    SiteState,
    TrainingConfig,
    parse_model,
    read_toml,
)
from verbund.errors import ConfigError

__all__ = [
    "AccessPointCredential",
    "AgentSection",
    "Credential",
    "OperatorCredential",
    "SiteAgentConfig",
    "SiteModelConfig",
    "SiteSection",
    "TrustSection",
    "load_site_config",
    "parse_site_config",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SiteSection(_Strict):
    """``[site]``: the facts access points route and filter by."""

    name: Name
    region: str = ""
    jurisdiction: str = ""
    max_data_class: DataClass = DataClass.internal
    certifications: list[str] = []
    state: SiteState = SiteState.active  # at first start; later the store's state wins


class AgentSection(Listening):
    """``[agent]``: where the agent listens, keeps its state, and how it speaks TLS.

    ``tls_client_ca`` turns on mutual TLS: a caller must present a certificate signed by
    that CA (uvicorn's ``ssl_cert_reqs = CERT_REQUIRED``) besides its bearer credential.
    """

    listen: str = "127.0.0.1:9100"
    state_dir: str = ".verbund-site"
    store_url: str = ""  # "" = SQLite under state_dir; or "postgresql+asyncpg://..."
    tls_cert: str = ""  # PEM certificate chain of the agent; "" = plain HTTP
    tls_key: str = ""
    tls_client_ca: str = ""  # mutual TLS: CA bundle the callers' certificates must chain to
    # long-polling of the catalogue: how long one GET ?wait= may be held at most
    max_wait_seconds: float = Field(30.0, gt=0, le=300)
    # files moving agent to agent: where other sites' agents reach this one ("" = at the
    # access points' agent_url), the CA bundle this agent checks https peers against, and
    # the certificate it presents to peers that require mutual TLS
    peer_url: str = ""
    peer_ca_file: str = ""
    peer_cert: str = ""
    peer_key: str = ""

    @field_validator("peer_url")
    @classmethod
    def _peer_url(cls, v: str) -> str:
        if v and not v.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return v.rstrip("/")

    # on-demand instances outlive a stop of the agent, and its next run takes them over;
    # false: they stop with it (the embedded demo, laptops)
    keep_instances: bool = True

    @field_validator("store_url")
    @classmethod
    def _known_driver(cls, v: str) -> str:
        if v and not v.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("must start with sqlite+aiosqlite:// or postgresql+asyncpg://")
        return v

    @model_validator(mode="after")
    def _tls_complete(self) -> AgentSection:
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("tls_cert and tls_key go together")
        if self.tls_client_ca and not self.tls_cert:
            raise ValueError("tls_client_ca (mutual TLS) needs tls_cert and tls_key")
        if bool(self.peer_cert) != bool(self.peer_key):
            raise ValueError("peer_cert and peer_key go together")
        return self

    @property
    def store(self) -> str:
        return self.store_url or f"sqlite+aiosqlite:///{Path(self.state_dir) / 'site.db'}"

    @property
    def ssl_cert_reqs(self) -> int:
        return int(ssl.CERT_REQUIRED if self.tls_client_ca else ssl.CERT_NONE)


class TrustSection(_Strict):
    """``[trust]``: the site's own Ed25519 key. With it the agent announces its public
    key in the catalogue, signs checkpoints of access points' audit chains, signs its
    monthly usage statements and the receipts of requests it relayed (docs/trust.md).
    The key is read from the file (PEM, ``verbund audit keygen``) or, if no file is
    named, from the variable (the raw 32-byte seed, base64); neither: the agent signs
    nothing."""

    signing_key_file: str = ""
    signing_key_env: EnvName = "VERBUND_SITE_SIGNING_KEY"


class Credential(_Strict):
    name: Name  # the actor named in logs and the audit log
    key_env: EnvName  # the environment variable that holds the bearer credential


class AccessPointCredential(Credential):
    """``[[access_points]]``: an access point that may call the agent, and its credential."""


class OperatorCredential(Credential):
    """``[[operators]]``: a person or tool of this site that may change its state."""


class SiteModelConfig(ModelConfig):
    """A model the site offers: the federation's model entry plus the data classes the
    site takes for it ([] = every class up to the site's ``max_data_class``)."""

    data_classes: list[DataClass] = []


class SiteAgentConfig(_Strict):
    site: SiteSection
    agent: AgentSection = AgentSection()
    trust: TrustSection = TrustSection()
    access_points: list[AccessPointCredential] = []
    operators: list[OperatorCredential] = []
    backends: list[BackendConfig] = []
    models: list[SiteModelConfig] = []
    prices: PriceList | None = None
    runner: RunnerConfig | None = None
    training: TrainingConfig = TrainingConfig()  # how often the runner is polled, file limits
    # probing of the site's own backends (probe_interval, probe_timeout, eject_*)
    routing: RoutingConfig = RoutingConfig()
    # on-demand models: what one instance may hold, and what the agent starts on demand
    capacity: SiteCapacity = SiteCapacity()
    on_demand: list[LaunchSpec] = []

    @model_validator(mode="after")
    def _cross_references(self) -> SiteAgentConfig:
        problems: list[str] = []
        for kind, names in (
            ("backend", [b.name for b in self.backends]),
            ("model", [m.name for m in self.models]),
            ("access point", [a.name for a in self.access_points]),
            ("operator", [o.name for o in self.operators]),
            ("on_demand model", [s.model for s in self.on_demand]),
        ):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                problems.append(f"duplicate {kind} names: {', '.join(dupes)}")
        problems += offer_problems(self.site.max_data_class, self.backends, self.models)
        if self.prices is not None:
            declared = {m.name for m in self.models}
            unknown = [m for m in self.prices.models if m != "*" and m not in declared]
            if unknown:
                problems.append(f"prices name undeclared models: {', '.join(unknown)}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def launch_spec(self, model: str) -> LaunchSpec | None:
        return next((s for s in self.on_demand if s.model == model), None)

    def model(self, name: str) -> SiteModelConfig | None:
        return next((m for m in self.models if m.name == name), None)


def offer_problems(
    max_class: DataClass, backends: list[BackendConfig], models: list[SiteModelConfig]
) -> list[str]:
    """Why this offer is not one the site may make; [] when it may.

    A backend must serve declared models only, and no model may take data above the
    site's ``max_data_class``: the agent refuses such an offer at start and when it is
    added at run time (defence in depth against a wrong entry)."""
    problems: list[str] = []
    declared = {m.name for m in models}
    for b in backends:
        unknown = [m for m in b.models if m not in declared]
        if unknown:
            problems.append(f"backend {b.name!r} serves undeclared models: {', '.join(unknown)}")
    for m in models:
        above = [d.value for d in m.data_classes if d.rank > max_class.rank]
        if above:
            problems.append(
                f"model {m.name!r} takes data classes above the site's max_data_class "
                f"{max_class.value!r}: {', '.join(above)}"
            )
    return problems


def on_demand_problems(config: SiteAgentConfig) -> list[tuple[str, str]]:
    """(field path, problem) for each on-demand entry the site cannot honour."""
    problems: list[tuple[str, str]] = []
    declared = {m.name for m in config.models}
    for i, spec in enumerate(config.on_demand):
        if spec.model not in declared:
            problems.append((f"on_demand[{i}:{spec.model}].model", "not declared under [[models]]"))
    for text in capacity_problems(config.on_demand, config.capacity):
        path, _, msg = text.partition(": ")
        problems.append((path, msg))
    return problems


def parse_site_config(data: dict[str, Any], source: str = "") -> SiteAgentConfig:
    config = parse_model(SiteAgentConfig, data, source)
    problems = on_demand_problems(config)
    if problems:
        raise ConfigError(problems, source)
    return config


def load_site_config(path: str | Path) -> SiteAgentConfig:
    return parse_site_config(read_toml(path), str(path))
