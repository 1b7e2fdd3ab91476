"""Checking a job's files before it is queued (the ``validating_files`` status)."""

from __future__ import annotations

import json
from pathlib import Path

from verbund.jobs._recipes import DataFormat
from verbund.jobs.recipes.tabular import TableError, read_table


def file_problem(path: Path, data: DataFormat, label_column: str = "label") -> str | None:
    """What is wrong with a training file for this kind of recipe, or None. Blocking."""
    try:
        if data is DataFormat.tabular:
            read_table(path, label_column)
        elif data is DataFormat.chat:
            _check_chat(path)
    except TableError as exc:
        return str(exc)
    except UnicodeDecodeError:
        return "the file is not UTF-8 text"
    except OSError as exc:
        return f"the file cannot be read: {exc.strerror}"
    return None


def _check_chat(path: Path) -> None:
    n_ok = 0
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except ValueError:
                raise TableError(f"line {n}: not valid JSON") from None
            messages = item.get("messages") if isinstance(item, dict) else None
            if not isinstance(messages, list) or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages
            ):
                raise TableError(f"line {n}: expected {{'messages': [{{'role', 'content'}}]}}")
            n_ok += 1
    if n_ok == 0:
        raise TableError("the file has no examples")
