"""Writing benchmark results: one line of where and on what they were measured, markdown
tables of result rows, and the file under ``benchmarks/results/``.

Every result names the commit it measured (``-dirty`` when Verbund's code differed from
it), so the README can say which code a number describes and a stale one is visible.
"""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def commit() -> str:
    """The checked-out commit, short, with ``-dirty`` if ``src/`` has uncommitted changes."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=False
        )
        return done.stdout.strip() if done.returncode == 0 else ""

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("-dirty" if git("status", "--porcelain", "--", "src") else "")


def machine(load: float | None = None) -> str:
    """When, on what and on which commit: the header line of every result."""
    load = os.getloadavg()[0] if load is None else load
    return (
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores shared with other "
        f"work (load average {load:.1f}), Python {platform.python_version()}, "
        f"commit {commit()}"
    )


def markdown_table(rows: Sequence[Mapping[str, Any]], cols: Sequence[str]) -> str:
    """``cols`` of every row, one table row each, headed by the column names."""
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def publish(name: str, text: str) -> Path:
    """Print ``text`` and write it to ``benchmarks/results/<name>``."""
    print(text)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / name
    path.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
    return path
