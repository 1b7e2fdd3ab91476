"""Persistence: tables, the async engine and Alembic migrations."""

from verbund.store._clock import StoreClock, store_now
from verbund.store._db import Store, alembic_config
from verbund.store._errors import (
    RETRY_AFTER_SECONDS,
    STORE_FAILURES,
    store_unavailable,
    unavailable_error,
)
from verbund.store._tables import (
    AdminKeyRow,
    ApiKeyRow,
    AuditRow,
    AvailabilityRow,
    Base,
    BatchItemRow,
    BatchRow,
    FileRow,
    InstitutionRow,
    LoginFlowRow,
    PersonRow,
    SessionRow,
    SiteCatalogueRow,
    SiteStateRow,
    StoredResponseRow,
    TrainingEventRow,
    TrainingJobRow,
    UsageRow,
)

__all__ = [
    "RETRY_AFTER_SECONDS",
    "STORE_FAILURES",
    "AdminKeyRow",
    "ApiKeyRow",
    "AuditRow",
    "AvailabilityRow",
    "Base",
    "BatchItemRow",
    "BatchRow",
    "FileRow",
    "InstitutionRow",
    "LoginFlowRow",
    "PersonRow",
    "SessionRow",
    "SiteCatalogueRow",
    "SiteStateRow",
    "Store",
    "StoreClock",
    "StoredResponseRow",
    "TrainingEventRow",
    "TrainingJobRow",
    "UsageRow",
    "alembic_config",
    "store_now",
    "store_unavailable",
    "unavailable_error",
]
