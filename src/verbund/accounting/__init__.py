"""Usage records, reports, prices, settlement, budgets, retention and site availability."""

from verbund.accounting._availability import SiteAvailability
from verbund.accounting._budget import BudgetService, Spend
from verbund.accounting._lines import UsageLine, load_lines, load_node_time
from verbund.accounting._period import UtcDay, UtcMonth, month_of, parse_month
from verbund.accounting._prices import BILLABLE, PriceBook, money
from verbund.accounting._report import GROUPS, node_time_report, usage_report
from verbund.accounting._retention import Retention
from verbund.accounting._settlement import merge_lines, settle
from verbund.accounting._sink import Recording, UsageSink, outcome_of
from verbund.accounting._usage import UsageRecord, UsageRecorder

__all__ = [
    "BILLABLE",
    "GROUPS",
    "BudgetService",
    "PriceBook",
    "Recording",
    "Retention",
    "SiteAvailability",
    "Spend",
    "UsageLine",
    "UsageRecord",
    "UsageRecorder",
    "UsageSink",
    "UtcDay",
    "UtcMonth",
    "load_lines",
    "load_node_time",
    "merge_lines",
    "money",
    "month_of",
    "node_time_report",
    "outcome_of",
    "parse_month",
    "settle",
    "usage_report",
]
