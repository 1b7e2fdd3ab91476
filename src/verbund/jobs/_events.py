"""Writing job events, and turning a recipe's metrics lines into them."""

from __future__ import annotations

import secrets
import time
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from verbund.store import TrainingEventRow

_LEVELS = {"info", "warn", "error"}
_MAX_KEYS = 32
_MAX_TEXT = 300
_LABELS = {
    "train_loss": "training loss",
    "train_accuracy": "training accuracy",
    "valid_loss": "validation loss",
    "valid_accuracy": "validation accuracy",
}


def add_event(
    s: AsyncSession,
    job_id: str,
    message: str,
    *,
    level: str = "info",
    type: str = "message",
    data: dict[str, Any] | None = None,
) -> None:
    s.add(
        TrainingEventRow(
            id=f"ftevent-{secrets.token_hex(12)}",
            job_id=job_id,
            created_at=time.time(),
            level=level,
            type=type,
            message=message[:1000],
            data=data or {},
        )
    )


def _clean(line: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in list(line.items())[:_MAX_KEYS]:
        if not isinstance(key, str) or len(key) > 64:
            continue
        if isinstance(value, bool | int | float):
            out[key] = value
        elif isinstance(value, str):
            out[key] = value[:_MAX_TEXT]
    return out


def metrics_message(data: dict[str, Any]) -> str:
    parts = []
    for key, label in _LABELS.items():
        value = data.get(key)
        if isinstance(value, int | float):
            parts.append(f"{label}={value:.4f}")
    step, total = data.get("step"), data.get("total_steps")
    head = f"Step {step}/{total}" if total is not None else f"Step {step}"
    return f"{head}: {', '.join(parts)}" if parts else head


def from_recipe_line(line: dict[str, Any]) -> tuple[str, str, str, dict[str, Any]]:
    """(type, level, message, data) for one JSON line of a recipe's metrics file."""
    data = _clean(line)
    if "step" in data:
        return "metrics", "info", metrics_message(data), data
    level = data.pop("level", "info")
    message = str(data.pop("message", "")) or "recipe event"
    return "message", level if level in _LEVELS else "info", message, data
