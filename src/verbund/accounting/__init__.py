"""Usage records and reports."""

from verbund.accounting._report import GROUPS, usage_report
from verbund.accounting._usage import UsageRecord, UsageRecorder

__all__ = ["GROUPS", "UsageRecord", "UsageRecorder", "usage_report"]
