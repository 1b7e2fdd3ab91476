"""Persistence: tables, the async engine and Alembic migrations."""

from verbund.store._db import Store, alembic_config
from verbund.store._tables import (
    ApiKeyRow,
    AuditRow,
    AvailabilityRow,
    Base,
    BatchItemRow,
    BatchRow,
    FileRow,
    InstitutionRow,
    SiteStateRow,
    TrainingEventRow,
    TrainingJobRow,
    UsageRow,
)

__all__ = [
    "ApiKeyRow",
    "AuditRow",
    "AvailabilityRow",
    "Base",
    "BatchItemRow",
    "BatchRow",
    "FileRow",
    "InstitutionRow",
    "SiteStateRow",
    "Store",
    "TrainingEventRow",
    "TrainingJobRow",
    "UsageRow",
    "alembic_config",
]
