"""Tabular training data (CSV with a header, or JSON lines) for the classifier recipes.

Self-contained (staged next to the recipe as ``tabular.py``), and also used by the access
point to check a file before a job is queued.

- CSV: a header row; the column ``label`` (or the last column) is the class, every
  other column a number.
- JSON lines: ``{"features": [0.0, 3.0, ...], "label": 7}`` per line.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

Rows = tuple[list[list[float]], list[Any]]


class TableError(ValueError):
    """The file is not a usable table; the message says where."""


def _label(value: Any) -> Any:
    if isinstance(value, str):
        try:
            as_float = float(value)
        except ValueError:
            return value.strip()
        return int(as_float) if as_float.is_integer() else value.strip()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TableError(f"label {value!r} is not a number or a string")
    return value


def read_table(
    source: Path | io.TextIOBase, label_column: str = "label", max_rows: int = 2_000_000
) -> Rows:
    """The table in a file, or in text already read (a seekable text stream)."""
    if isinstance(source, Path):
        with source.open("r", encoding="utf-8", newline="") as f:
            return _read_text(f, label_column, max_rows)
    return _read_text(source, label_column, max_rows)


def _read_text(f: io.TextIOBase, label_column: str, max_rows: int) -> Rows:
    head = f.read(1)
    while head and head.isspace():
        head = f.read(1)
    f.seek(0)
    if head == "{":
        return _read_jsonl(f, max_rows)
    return _read_csv(f, label_column, max_rows)


def _read_jsonl(f: io.TextIOBase, max_rows: int) -> Rows:
    xs: list[list[float]] = []
    ys: list[Any] = []
    for n, line in enumerate(f, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError:
            raise TableError(f"line {n}: not valid JSON") from None
        if not isinstance(item, dict) or "features" not in item or "label" not in item:
            raise TableError(f"line {n}: expected an object with 'features' and 'label'")
        feats = item["features"]
        if not isinstance(feats, list) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in feats
        ):
            raise TableError(f"line {n}: 'features' must be a list of numbers")
        xs.append([float(v) for v in feats])
        ys.append(_label(item["label"]))
        if len(xs) > max_rows:
            raise TableError(f"more than {max_rows} rows")
    return _checked(xs, ys)


def _read_csv(f: io.TextIOBase, label_column: str, max_rows: int) -> Rows:
    reader = csv.reader(f)
    header = next(reader, None)
    if not header:
        raise TableError("the file is empty")
    header = [h.strip() for h in header]
    target = header.index(label_column) if label_column in header else len(header) - 1
    xs: list[list[float]] = []
    ys: list[Any] = []
    for n, row in enumerate(reader, 2):
        if not row:
            continue
        if len(row) != len(header):
            raise TableError(f"row {n}: {len(row)} columns, the header has {len(header)}")
        try:
            xs.append([float(v) for i, v in enumerate(row) if i != target])
        except ValueError:
            raise TableError(f"row {n}: a feature is not a number") from None
        ys.append(_label(row[target]))
        if len(xs) > max_rows:
            raise TableError(f"more than {max_rows} rows")
    return _checked(xs, ys)


def _checked(xs: list[list[float]], ys: list[Any]) -> Rows:
    if len(xs) < 2:
        raise TableError("at least two rows are needed")
    width = len(xs[0])
    if width == 0:
        raise TableError("no feature columns")
    for i, x in enumerate(xs):
        if len(x) != width:
            raise TableError(f"row {i + 1} has {len(x)} features, the first has {width}")
    if len(set(map(repr, ys))) < 2:
        raise TableError("at least two different labels are needed")
    return xs, ys


def write_metrics(job_dir: Path, **values: Any) -> None:
    """Append one JSON line to the job's metrics file (the runner tails it)."""
    with (job_dir / "metrics.jsonl").open("a", encoding="utf-8") as f:
        f.write(json.dumps(values) + "\n")
        f.flush()


def write_linear_model(
    out: Path,
    *,
    classes: list[Any],
    coef: list[list[float]],
    intercept: list[float],
    mean: list[float],
    scale: list[float],
    info: dict[str, Any],
) -> None:
    """The artifact the access point serves: a linear classifier, plain JSON, no pickle."""
    model = {
        "format": "verbund-linear-v1",
        "task": "classification",
        "n_features": len(mean),
        "classes": classes,
        "coef": coef,
        "intercept": intercept,
        "mean": mean,
        "scale": scale,
        "info": info,
    }
    (out / "model.json").write_text(json.dumps(model))
