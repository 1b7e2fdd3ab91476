"""The tables of the store. API schemas live elsewhere; these are storage only."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class InstitutionRow(Base):
    __tablename__ = "institutions"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(256), default="")
    home_region: Mapped[str] = mapped_column(String(64), default="")
    default_data_class: Mapped[str] = mapped_column(String(32), default="internal")
    allowed_sites: Mapped[list[str]] = mapped_column(JSON, default=list)
    allowed_regions: Mapped[list[str]] = mapped_column(JSON, default=list)
    allowed_jurisdictions: Mapped[list[str]] = mapped_column(JSON, default=list)
    required_certifications: Mapped[list[str]] = mapped_column(JSON, default=list)
    requests_per_minute: Mapped[int] = mapped_column(Integer, default=0)
    tokens_per_minute: Mapped[int] = mapped_column(Integer, default=0)
    tokens_per_month: Mapped[int] = mapped_column(Integer, default=0)
    max_concurrent_requests: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # accounting (migration 0006_accounting); money as a decimal string, never a float
    partner_site: Mapped[str] = mapped_column(String(128), default="")
    budget_tokens_per_month: Mapped[int] = mapped_column(Integer, default=0)
    budget_per_month: Mapped[str] = mapped_column(String(32), default="0")
    budget_hard_stop: Mapped[bool] = mapped_column(Boolean, default=False)
    # files' lifetime: default and maximum in seconds, 0 = none (migration 0010_trust)
    file_expires_after: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    file_max_expires_after: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # migration 0009_responses: the opt-in to stored responses
    store_responses: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # migration 0013_receipts: every request needs a site's signed processing receipt
    require_receipts: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    person_requests_per_minute: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    person_tokens_per_minute: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    source: Mapped[str] = mapped_column(String(16), default="admin")
    created_at: Mapped[float] = mapped_column(Float)


class ApiKeyRow(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_hash: Mapped[str] = mapped_column(String(128), unique=True, index=True)
    prefix: Mapped[str] = mapped_column(String(32))
    institution_id: Mapped[str] = mapped_column(ForeignKey("institutions.id"), index=True)
    name: Mapped[str] = mapped_column(String(256), default="")
    created_at: Mapped[float] = mapped_column(Float)
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    requests_per_minute: Mapped[int | None] = mapped_column(Integer, nullable=True)
    tokens_per_minute: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # people's own keys (migration 0008_identity): who made it, when it ends, its class
    person_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    data_class: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # migration 0009_responses: a front-end's key (Open WebUI), whose user headers name
    # the person behind each request
    front_end: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # the model kinds GET /v1/models lists for this key (null: all), e.g. ["chat"] for a
    # chat front-end whose model picker should not offer embedding or OIP models
    model_kinds: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)


class StoredResponseRow(Base):
    """A stored Response of the Responses API. ``sealed`` holds its text (the Response
    object and the conversation's items) encrypted with a key that lives outside the
    store; nothing else here says what was asked or answered."""

    __tablename__ = "stored_responses"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    institution_id: Mapped[str] = mapped_column(String(128), index=True)
    key_id: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float, index=True)
    sealed: Mapped[bytes] = mapped_column(LargeBinary)


class AdminKeyRow(Base):
    """A role-scoped key for the admin API (a site operator's, an institution admin's...).
    Kept apart from institution keys: an admin key never pays for inference."""

    __tablename__ = "admin_keys"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_hash: Mapped[str] = mapped_column(String(128), unique=True, index=True)
    prefix: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(256), default="")
    role: Mapped[str] = mapped_column(String(32))
    institution_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    site: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class PersonRow(Base):
    """A person who signed in. ``id`` is a pseudonymous subject (a keyed hash of the
    provider's issuer and subject), never the provider's own identifier."""

    __tablename__ = "people"
    __table_args__ = (Index("ix_people_inst", "institution_id"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    institution_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    role: Mapped[str] = mapped_column(String(32))
    site: Mapped[str | None] = mapped_column(String(128), nullable=True)
    display_name: Mapped[str] = mapped_column(String(256), default="")
    provider: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[float] = mapped_column(Float)
    last_login_at: Mapped[float] = mapped_column(Float)
    requests_per_minute: Mapped[int] = mapped_column(Integer, default=0)
    tokens_per_minute: Mapped[int] = mapped_column(Integer, default=0)


class SessionRow(Base):
    """A signed-in browser. ``id`` is the SHA-256 of the cookie's value; the role and
    scope are fixed at sign-in, so a changed entitlement takes effect at the next one."""

    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    person_id: Mapped[str] = mapped_column(String(64), index=True)
    role: Mapped[str] = mapped_column(String(32))
    institution_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    site: Mapped[str | None] = mapped_column(String(128), nullable=True)
    provider: Mapped[str] = mapped_column(String(64), default="")
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float, index=True)


class LoginFlowRow(Base):
    """A sign-in under way: what the callback must find again (``state``, stored hashed)
    and check (``nonce``, the PKCE verifier, where to go afterwards). Used once."""

    __tablename__ = "login_flows"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    provider: Mapped[str] = mapped_column(String(64))
    nonce: Mapped[str] = mapped_column(String(128))
    code_verifier: Mapped[str] = mapped_column(String(128))
    return_to: Mapped[str] = mapped_column(String(512), default="/")
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float, index=True)


class SiteStateRow(Base):
    __tablename__ = "site_states"

    site: Mapped[str] = mapped_column(String(128), primary_key=True)
    state: Mapped[str] = mapped_column(String(32))
    updated_at: Mapped[float] = mapped_column(Float)
    actor: Mapped[str] = mapped_column(String(128), default="")


class SiteCatalogueRow(Base):
    """The last catalogue a site's agent announced to this federation's access points:
    a restarted access point serves from it until the agent answers again."""

    __tablename__ = "site_catalogues"

    site: Mapped[str] = mapped_column(String(128), primary_key=True)
    etag: Mapped[str] = mapped_column(String(128))
    body: Mapped[str] = mapped_column(Text)  # the catalogue's JSON as the agent sent it
    received_at: Mapped[float] = mapped_column(Float)


class NodeTimeRow(Base):
    """Node time on-demand instances held at a site (CPU and GPU seconds, idle included),
    per model and UTC hour, as the site's agent counts it. Stored as the agent reports it
    (not added up), so several access points reading the same agent agree."""

    __tablename__ = "on_demand_node_time"

    site: Mapped[str] = mapped_column(String(128), primary_key=True)
    model: Mapped[str] = mapped_column(String(256), primary_key=True)
    hour: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # Unix seconds, UTC
    cpu_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    gpu_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    updated_at: Mapped[float] = mapped_column(Float)


class UsageRow(Base):
    __tablename__ = "usage_records"
    __table_args__ = (Index("ix_usage_inst_ts", "institution_id", "ts"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    ts: Mapped[float] = mapped_column(Float, index=True)
    request_id: Mapped[str] = mapped_column(String(64))
    access_point: Mapped[str] = mapped_column(String(128))
    institution_id: Mapped[str] = mapped_column(String(128))
    key_id: Mapped[str] = mapped_column(String(64))
    endpoint: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(128))
    site: Mapped[str] = mapped_column(String(128), default="")
    backend: Mapped[str] = mapped_column(String(128), default="")
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16))
    http_status: Mapped[int] = mapped_column(Integer)
    latency_ms: Mapped[float] = mapped_column(Float)
    ttft_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    stream: Mapped[bool] = mapped_column(Boolean, default=False)
    priority: Mapped[str] = mapped_column(String(16), default="interactive")
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    usage_estimated: Mapped[bool] = mapped_column(Boolean, default=False)
    # training jobs (endpoint /v1/fine_tuning/jobs or /v1/training/jobs): allocated seconds
    cpu_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    gpu_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    # added by migration 0003_oip: body sizes of OIP v2 inference (no tokens there)
    request_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    response_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # the person whose own key made the request (migration 0008_identity)
    person_id: Mapped[str | None] = mapped_column(String(64), nullable=True)


class AuditRow(Base):
    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ts: Mapped[float] = mapped_column(Float)
    actor: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(32), default="", server_default="")
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(256))
    before: Mapped[str] = mapped_column(Text, default="null")
    after: Mapped[str] = mapped_column(Text, default="null")
    # unique: two entries after the same one would be a fork
    prev_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class CheckpointRow(Base):
    """A partner's signed checkpoint of the audit chain, kept to check the chain against."""

    __tablename__ = "audit_checkpoints"

    signer: Mapped[str] = mapped_column(String(128), primary_key=True)
    chain: Mapped[str] = mapped_column(String(128), primary_key=True)
    index: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    hash: Mapped[str] = mapped_column(String(64))
    ts: Mapped[float] = mapped_column(Float)
    signature: Mapped[str] = mapped_column(String(128))
    received_at: Mapped[float] = mapped_column(Float)


class AvailabilityRow(Base):
    """Health probe rounds of one site seen by one access point in one UTC minute."""

    __tablename__ = "site_availability"

    site: Mapped[str] = mapped_column(String(128), primary_key=True)
    access_point: Mapped[str] = mapped_column(String(128), primary_key=True)
    minute: Mapped[int] = mapped_column(BigInteger, primary_key=True, index=True)  # Unix s
    up: Mapped[int] = mapped_column(Integer, default=0)
    total: Mapped[int] = mapped_column(Integer, default=0)


class TrainingJobRow(Base):
    """A fine-tuning or training job; ``runner_job_id`` lets a restart find it at its site."""

    __tablename__ = "training_jobs"
    __table_args__ = (Index("ix_training_jobs_inst_created", "institution_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # fine_tune | training
    institution_id: Mapped[str] = mapped_column(String(128))
    key_id: Mapped[str] = mapped_column(String(64))
    access_point: Mapped[str] = mapped_column(String(128))
    recipe: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(256))
    training_file: Mapped[str] = mapped_column(String(128))
    validation_file: Mapped[str | None] = mapped_column(String(128), nullable=True)
    data_class: Mapped[str] = mapped_column(String(32))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    resources: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    metadata_: Mapped[dict[str, str] | None] = mapped_column("metadata", JSON, nullable=True)
    suffix: Mapped[str] = mapped_column(String(64))
    seed: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(32), index=True)
    site: Mapped[str | None] = mapped_column(String(128), nullable=True)
    runner: Mapped[str | None] = mapped_column(String(16), nullable=True)
    runner_job_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    runner_done: Mapped[bool] = mapped_column(Boolean, default=False)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    submit_attempts: Mapped[int] = mapped_column(Integer, default=0)
    metrics_offset: Mapped[int] = mapped_column(Integer, default=0)
    last_metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    fine_tuned_model: Mapped[str | None] = mapped_column(String(256), nullable=True, index=True)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    cpu_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    gpu_seconds: Mapped[float] = mapped_column(Float, default=0.0)


class TrainingEventRow(Base):
    __tablename__ = "training_job_events"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("training_jobs.id"), index=True)
    created_at: Mapped[float] = mapped_column(Float)
    level: Mapped[str] = mapped_column(String(8))
    type: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class FileRow(Base):
    """An uploaded or generated file; its bytes live in the file store under ``blob_key``."""

    __tablename__ = "files"
    __table_args__ = (Index("ix_files_inst_created", "institution_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    institution_id: Mapped[str] = mapped_column(String(128))
    purpose: Mapped[str] = mapped_column(String(32))
    filename: Mapped[str] = mapped_column(String(256))
    bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float | None] = mapped_column(Float, nullable=True, index=True)
    blob_key: Mapped[str] = mapped_column(String(160))
    # the site whose agent holds the bytes (None: this federation's own file store), and
    # the data class they were uploaded with (None: not given, the uploader's default)
    site: Mapped[str | None] = mapped_column(String(128), nullable=True)
    data_class: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # the API key that uploaded it (erasure per key or person); None: made by the access point
    key_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)


class BatchRow(Base):
    """A batch; ``final_status`` is where a batch in ``finalizing`` goes next."""

    __tablename__ = "batches"
    __table_args__ = (
        Index("ix_batches_inst_created", "institution_id", "created_at"),
        Index("ix_batches_status", "status"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    institution_id: Mapped[str] = mapped_column(String(128))
    key_id: Mapped[str] = mapped_column(String(64))
    data_class: Mapped[str] = mapped_column(String(32))
    endpoint: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(128), default="")
    input_file_id: Mapped[str] = mapped_column(String(64))
    completion_window: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    final_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    meta: Mapped[dict[str, str] | None] = mapped_column("metadata", JSON, nullable=True)
    errors: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)
    output_file_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_file_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)
    in_progress_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finalizing_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    completed_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    failed_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    expired_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    cancelling_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    cancelled_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    total: Mapped[int] = mapped_column(Integer, default=0)
    completed: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_until: Mapped[float] = mapped_column(Float, default=0.0)


class BatchItemRow(Base):
    """One request of a batch: where its body is in the input file, and where its result is.

    No request or answer content is stored here: bodies stay in the input file, results in
    result parts of the file store until the output files are written.
    """

    __tablename__ = "batch_items"
    __table_args__ = (
        UniqueConstraint("batch_id", "custom_id", name="uq_batch_items_custom_id"),
        Index("ix_batch_items_claim", "batch_id", "status", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"))
    line: Mapped[int] = mapped_column(Integer)
    custom_id: Mapped[str] = mapped_column(String(512))
    input_offset: Mapped[int] = mapped_column(BigInteger)
    input_length: Mapped[int] = mapped_column(Integer)
    # pending | running | done | failed | cancelled | expired
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_try_at: Mapped[float] = mapped_column(Float, default=0.0)
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_until: Mapped[float] = mapped_column(Float, default=0.0)
    result_part: Mapped[str | None] = mapped_column(String(160), nullable=True)
    result_offset: Mapped[int] = mapped_column(BigInteger, default=0)
    result_length: Mapped[int] = mapped_column(Integer, default=0)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
