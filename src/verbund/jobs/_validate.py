"""Checking a job's files before it is queued (the ``validating_files`` status)."""

from __future__ import annotations

import asyncio
import io
import json
from dataclasses import dataclass
from pathlib import Path

from verbund.errors import NotFound
from verbund.jobs._files import TrainingFileSource
from verbund.jobs._recipes import DataFormat, RecipeBook
from verbund.jobs.recipes.tabular import TableError, read_table
from verbund.store import TrainingJobRow


@dataclass(frozen=True, slots=True)
class Problem:
    """Why a job cannot run, as its OpenAI-shaped error: code, message, parameter."""

    code: str
    message: str
    param: str | None = None


async def job_problem(
    row: TrainingJobRow, files: TrainingFileSource, recipes: RecipeBook, max_bytes: int
) -> Problem | None:
    """What stops the job from being queued (its recipe, its files), or None.

    Checked again after creation, off the request path: the files may have gone, and
    reading a large table takes longer than a client should wait.
    """
    recipe = recipes.recipes.get(row.recipe)
    if recipe is None:
        return Problem("unknown_recipe", f"The recipe {row.recipe} is no longer registered.")
    label = str(row.params.get("label_column", "label"))
    for param, file_id in (
        ("training_file", row.training_file),
        ("validation_file", row.validation_file),
    ):
        if file_id is None:
            continue
        try:
            f = await files.open(row.institution_id, file_id)
        except NotFound:
            return Problem("invalid_file", f"The file {file_id} no longer exists.", param)
        if f.size > max_bytes:
            return Problem("invalid_file", f"The file {file_id} exceeds {max_bytes} bytes.", param)
        source: Path | bytes
        if f.path is not None:
            source = f.path
        elif f.stream is not None:  # a sealed store: checked in memory (at most max_bytes)
            source = b"".join([chunk async for chunk in f.stream()])
        else:
            return Problem("invalid_file", f"The file {file_id} is not at this site.", param)
        problem = await asyncio.to_thread(file_problem, source, recipe.data, label)
        if problem is not None:
            return Problem("invalid_file", f"{file_id}: {problem}", param)
    return None


def file_problem(source: Path | bytes, data: DataFormat, label_column: str = "label") -> str | None:
    """What is wrong with a training file (on disk, or its bytes in memory) for this kind
    of recipe, or None. Blocking."""
    try:
        if data is DataFormat.tabular:
            read_table(_text(source), label_column)
        elif data is DataFormat.chat:
            _check_chat(_text(source))
    except TableError as exc:
        return str(exc)
    except UnicodeDecodeError:
        return "the file is not UTF-8 text"
    except OSError as exc:
        return f"the file cannot be read: {exc.strerror}"
    return None


def _text(source: Path | bytes) -> Path | io.TextIOBase:
    return source if isinstance(source, Path) else io.StringIO(source.decode(), newline="")


def _check_chat(source: Path | io.TextIOBase) -> None:
    n_ok = 0
    with source.open(encoding="utf-8") if isinstance(source, Path) else source as f:
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
