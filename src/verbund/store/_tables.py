"""The tables of the store. API schemas live elsewhere; these are storage only."""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Boolean, Float, ForeignKey, Index, Integer, String, Text
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
    requests_per_minute: Mapped[int] = mapped_column(Integer, default=0)
    tokens_per_minute: Mapped[int] = mapped_column(Integer, default=0)
    tokens_per_month: Mapped[int] = mapped_column(Integer, default=0)
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


class SiteStateRow(Base):
    __tablename__ = "site_states"

    site: Mapped[str] = mapped_column(String(128), primary_key=True)
    state: Mapped[str] = mapped_column(String(32))
    updated_at: Mapped[float] = mapped_column(Float)
    actor: Mapped[str] = mapped_column(String(128), default="")


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
    # added by migration 0003_oip: body sizes of OIP v2 inference (no tokens there)
    request_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    response_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class AuditRow(Base):
    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ts: Mapped[float] = mapped_column(Float)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(256))
    before: Mapped[str] = mapped_column(Text, default="null")
    after: Mapped[str] = mapped_column(Text, default="null")
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)
