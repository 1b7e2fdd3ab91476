"""Report rows into chart series: pure functions, so the pages hold no arithmetic.

Rows are what :func:`verbund.accounting.usage_report` returns (dicts with the group
columns and the sums). Days are UTC calendar days like the reports'; a day without usage
is a zero, not a missing bar, so a quiet week looks quiet.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from verbund.console._charts import Line

__all__ = ["burn_down", "day_labels", "last_days", "ranking", "stacked_by_day"]


def last_days(now: float, n: int) -> list[str]:
    """The ``n`` UTC days up to and including the one of ``now``, oldest first."""
    today = datetime.fromtimestamp(now, UTC).date()
    return [(today - timedelta(days=n - 1 - i)).isoformat() for i in range(n)]


def day_labels(days: Sequence[str]) -> list[str]:
    """``2026-11-30`` -> ``30 Nov``: short enough for an axis."""
    return [datetime.strptime(d, "%Y-%m-%d").strftime("%d %b").lstrip("0") for d in days]


def stacked_by_day(
    rows: Iterable[Mapping[str, Any]], days: Sequence[str], by: str, metric: str
) -> dict[str, list[float]]:
    """``by`` value (a model, say) -> ``metric`` per day of ``days``; rows outside are left."""
    index = {d: i for i, d in enumerate(days)}
    out: dict[str, list[float]] = {}
    for r in rows:
        i = index.get(str(r["day"]))
        if i is None:
            continue
        series = out.setdefault(str(r[by]), [0.0] * len(days))
        series[i] += float(r[metric])
    return dict(sorted(out.items(), key=lambda kv: -sum(kv[1])))


def ranking(
    rows: Iterable[Mapping[str, Any]],
    by: str,
    metric: str,
    limit: int = 12,
    names: Mapping[str, str] | None = None,
) -> list[tuple[str, float]]:
    """The largest ``metric`` per ``by`` value, largest first; the rest summed as "others".

    ``names`` maps a value (a key id) to what readers know it by (the key's name)."""
    sums: dict[str, float] = {}
    for r in rows:
        label = str(r[by])
        sums[label] = sums.get(label, 0.0) + float(r[metric])
    ordered = sorted(sums.items(), key=lambda kv: (-kv[1], kv[0]))
    named = [((names or {}).get(k, k), v) for k, v in ordered]
    if len(named) > limit:
        rest = sum(v for _, v in named[limit - 1 :])
        named = [*named[: limit - 1], (f"{len(named) - limit + 1} others", rest)]
    return named


def burn_down(
    daily: Mapping[str, float | Decimal], month_days: Sequence[str], budget: float, today: str
) -> list[Line]:
    """What is left of ``budget`` at the end of each day of the month (up to ``today``),
    and the even pace that would use it up exactly on the month's last day."""
    left: list[float | None] = []
    spent = 0.0
    for d in month_days:
        if d > today:
            left.append(None)
            continue
        spent += float(daily.get(d, 0.0))
        left.append(budget - spent)
    n = len(month_days)
    pace: list[float | None] = [budget * (1 - (i + 1) / n) for i in range(n)]
    return [Line("left", left), Line("even pace", pace)]
