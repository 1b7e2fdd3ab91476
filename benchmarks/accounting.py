"""Accounting costs: the per-request budget work on the hot path, and reports/settlement
over a realistic month of usage records in SQLite.

Run: PYTHONPATH=src python -m benchmarks.accounting [--records 200000]
Prints a table and writes benchmarks/results/accounting.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import shutil
import statistics
import tempfile
import time
import uuid
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy

from verbund.accounting import (
    BudgetService,
    PriceBook,
    SiteAvailability,
    UsageRecord,
    load_lines,
    parse_month,
    settle,
    usage_report,
)
from verbund.config import InstitutionConfig, SiteConfig
from verbund.store import Store, UsageRow

SITES = [
    SiteConfig.model_validate(
        {
            "name": f"site-{i}",
            "region": f"R{i}",
            "prices": {
                "models": {
                    f"m{j}": {"input_per_million": 0.5, "output_per_million": 1.5} for j in range(5)
                }
            },
        }
    )
    for i in range(4)
]
INSTITUTIONS = [
    InstitutionConfig(id=f"uni-{i}", home_region=f"R{i % 4}", budget_tokens_per_month=10**9)
    for i in range(4)
] + [InstitutionConfig(id=f"uni-{i}", home_region=f"R{i % 4}") for i in range(4, 40)]


def per_call_us(fn: object, n: int) -> float:
    runs = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(n):
            fn()  # type: ignore[operator]
        runs.append((time.perf_counter() - t) / n * 1e6)
    return statistics.median(runs)


def record(ts: float, rnd: random.Random) -> UsageRecord:
    site = rnd.randrange(4)
    return UsageRecord(
        request_id=uuid.uuid4().hex,
        access_point="ap-1",
        institution_id=f"uni-{rnd.randrange(40)}",
        key_id="key_1",
        endpoint="/v1/chat/completions",
        model=f"m{rnd.randrange(5)}",
        site=f"site-{site}",
        backend=f"b{site}",
        prompt_tokens=rnd.randrange(50, 2000),
        completion_tokens=rnd.randrange(10, 500),
        ts=ts,
    )


async def main(records: int) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    store_dir = Path(tempfile.mkdtemp(prefix="verbund-bench-"))
    store = Store(f"sqlite+aiosqlite:///{store_dir / 'bench.db'}")
    await store.migrate()
    rnd = random.Random(1)

    budgets = BudgetService(
        store,
        PriceBook(SITES),
        budgeted=lambda: INSTITUTIONS,
        clock=lambda: parse_month("2025-01")[0] + 20 * 86400,  # "now" is late in the month
    )
    capped = InstitutionConfig(id="uni-1", budget_tokens_per_month=10**12, budget_per_month=10**9)
    rec = record(parse_month("2025-01")[0] + 86400, rnd)
    rows.append(
        (
            "BudgetService.check (2 budgets), us/call",
            f"{per_call_us(lambda: budgets.check(capped), 20000):.2f}",
        )
    )
    rows.append(
        (
            "BudgetService.observe, us/call",
            f"{per_call_us(lambda: budgets.observe(rec), 20000):.2f}",
        )
    )
    avail = SiteAvailability(store, "ap-1")
    round_ = {s.name: True for s in SITES}
    rows.append(
        (
            "SiteAvailability.observe (4 sites), us/round",
            f"{per_call_us(lambda: avail.observe(round_), 20000):.2f}",
        )
    )

    start, end = parse_month("2025-01")
    t = time.perf_counter()
    batch = [asdict(record(start + rnd.random() * (end - start), rnd)) for _ in range(records)]
    async with store.session() as s, s.begin():
        for i in range(0, len(batch), 5000):
            await s.execute(sqlalchemy.insert(UsageRow), batch[i : i + 5000])
    rows.append((f"insert {records} usage records, s", f"{time.perf_counter() - t:.2f}"))

    t = time.perf_counter()
    report = await usage_report(store, ["day", "institution"])
    rows.append(
        (
            f"usage_report day x institution ({len(report)} rows), s",
            f"{time.perf_counter() - t:.3f}",
        )
    )
    t = time.perf_counter()
    lines = await load_lines(store, start, end)
    rows.append(
        (f"load_lines for a month ({len(lines)} lines), s", f"{time.perf_counter() - t:.3f}")
    )
    t = time.perf_counter()
    st = settle("2025-01", lines, SITES, INSTITUTIONS)
    rows.append((f"settle ({len(st['balances'])} balances), s", f"{time.perf_counter() - t:.4f}"))
    t = time.perf_counter()
    await budgets.load()
    rows.append(
        ("BudgetService.load (4 of 40 institutions budgeted), s", f"{time.perf_counter() - t:.3f}")
    )
    await store.aclose()
    shutil.rmtree(store_dir)
    return rows


def write(rows: list[tuple[str, str]], records: int) -> None:
    width = max(len(k) for k, _ in rows)
    table = "\n".join(f"| {k.ljust(width)} | {v:>10} |" for k, v in rows)
    header = f"| {'measure'.ljust(width)} | {'value':>10} |\n|{'-' * (width + 2)}|{'-' * 12}|\n"
    print(header + table)
    out = Path(__file__).parent / "results" / "accounting.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        "# Accounting benchmark\n\n"
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}\n"
        f"- machine: {platform.machine()}, {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.1f} (shared with other jobs)\n"
        f"- Python {platform.python_version()}, SQLAlchemy {sqlalchemy.__version__}, "
        f"SQLite {__import__('sqlite3').sqlite_version}\n"
        f"- command: `PYTHONPATH=src python -m benchmarks.accounting --records {records}`\n\n"
        + header
        + table
        + "\n"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=100_000)
    args = parser.parse_args()
    write(asyncio.run(main(args.records)), args.records)
