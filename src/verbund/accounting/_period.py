"""Calendar periods in UTC: SQL expressions that bucket ``usage_records.ts`` by day and month.

``ts`` is a float Unix time. The expressions render as ``strftime`` on SQLite and as
``to_char(to_timestamp(..) AT TIME ZONE 'UTC', ..)`` on PostgreSQL, both yielding
``YYYY-MM-DD`` / ``YYYY-MM`` text that sorts in calendar order. Times are floored to
whole seconds first, so a record belongs to the same day in both stores and in Python
(``ts < end`` of a period exactly when its floor is). The formats are SQL literals (not
bound parameters), so the same expression in SELECT and GROUP BY compares equal on
PostgreSQL.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.exc import CompileError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import String

_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


class UtcDay(FunctionElement[str]):
    type = String()
    inherit_cache = True
    name = "utc_day"


class UtcMonth(FunctionElement[str]):
    type = String()
    inherit_cache = True
    name = "utc_month"


_FORMATS: dict[type[FunctionElement[str]], tuple[str, str]] = {
    UtcDay: ("%Y-%m-%d", "YYYY-MM-DD"),
    UtcMonth: ("%Y-%m", "YYYY-MM"),
}


def _sqlite(element: FunctionElement[str], compiler: SQLCompiler, **kw: Any) -> str:
    fmt = _FORMATS[type(element)][0]
    arg = compiler.process(element.clauses, **kw)
    return f"strftime('{fmt}', CAST({arg} AS INTEGER), 'unixepoch')"


def _postgresql(element: FunctionElement[str], compiler: SQLCompiler, **kw: Any) -> str:
    fmt = _FORMATS[type(element)][1]
    arg = compiler.process(element.clauses, **kw)
    return f"to_char(to_timestamp(floor({arg})) AT TIME ZONE 'UTC', '{fmt}')"


def _other(element: FunctionElement[str], compiler: SQLCompiler, **kw: Any) -> str:
    raise CompileError(f"{element.name} supports SQLite and PostgreSQL only")


for _cls in _FORMATS:
    compiles(_cls, "sqlite")(_sqlite)
    compiles(_cls, "postgresql")(_postgresql)
    compiles(_cls)(_other)


def parse_month(month: str) -> tuple[float, float]:
    """``"2025-01"`` -> (start, end) as Unix times, end exclusive; ValueError if malformed."""
    m = _MONTH.match(month)
    if not m or not 1 <= int(m.group(2)) <= 12:
        raise ValueError(f"expected a month as YYYY-MM, got {month!r}")
    year, mon = int(m.group(1)), int(m.group(2))
    start = datetime(year, mon, 1, tzinfo=UTC)
    end = datetime(year + mon // 12, mon % 12 + 1, 1, tzinfo=UTC)
    return start.timestamp(), end.timestamp()


def month_of(ts: float) -> str:
    return datetime.fromtimestamp(math.floor(ts), UTC).strftime("%Y-%m")


def iso_utc(ts: float) -> str:
    return datetime.fromtimestamp(math.floor(ts), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
