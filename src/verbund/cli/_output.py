"""Everything the CLI prints: rows as table, CSV or JSON, and errors on stderr."""

from __future__ import annotations

import csv
import io
import json
import sys
from typing import Annotated, Any

import typer

FORMATS = ("table", "csv", "json")

FormatOpt = Annotated[str, typer.Option("--format", help="table | csv | json")]


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print MESSAGE in red on stderr; the caller raises the returned exit."""
    typer.secho(message, err=True, fg=typer.colors.RED)
    return typer.Exit(code)


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise fail("--format must be table, csv or json")
    return fmt


def echo_json(data: Any, *, indent: int | None = 2) -> None:
    typer.echo(json.dumps(data, indent=indent))


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """Columns padded to their widest cell; a None shows as ``-``, an absent key as blank."""
    if not rows:
        return "(no rows)"
    cells = [[_cell(r, c) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def _cell(row: dict[str, Any], column: str) -> str:
    if column not in row:
        return ""
    value = row[column]
    return "-" if value is None else str(value)


def emit(rows: list[dict[str, Any]], columns: list[str], fmt: str = "table") -> None:
    """Print ROWS: a table of COLUMNS, CSV of COLUMNS, or JSON of the whole rows."""
    if fmt == "json":
        echo_json(rows)
    elif fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        sys.stdout.write(buf.getvalue())
    else:
        typer.echo(table(rows, columns))
