"""Persistence: tables, the async engine and Alembic migrations."""

from verbund.store._db import Store, alembic_config
from verbund.store._tables import (
    ApiKeyRow,
    AuditRow,
    Base,
    BatchItemRow,
    BatchRow,
    FileRow,
    InstitutionRow,
    SiteStateRow,
    UsageRow,
)

__all__ = [
    "ApiKeyRow",
    "AuditRow",
    "Base",
    "BatchItemRow",
    "BatchRow",
    "FileRow",
    "InstitutionRow",
    "SiteStateRow",
    "Store",
    "UsageRow",
    "alembic_config",
]
