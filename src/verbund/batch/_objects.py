"""The batch object as the API shows it, and the lines of output and error files."""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass
from typing import Any

import orjson

from verbund.store import BatchRow

__all__ = [
    "ACTIVE",
    "TERMINAL",
    "BatchCounts",
    "BatchStatus",
    "ItemStatus",
    "batch_to_api",
    "error_line",
    "response_line",
]


class BatchStatus(enum.StrEnum):
    validating = "validating"
    failed = "failed"
    in_progress = "in_progress"
    finalizing = "finalizing"
    completed = "completed"
    expired = "expired"
    cancelling = "cancelling"
    cancelled = "cancelled"


TERMINAL = frozenset(
    {BatchStatus.failed, BatchStatus.completed, BatchStatus.expired, BatchStatus.cancelled}
)
ACTIVE = frozenset(
    {
        BatchStatus.validating,
        BatchStatus.in_progress,
        BatchStatus.finalizing,
        BatchStatus.cancelling,
    }
)


class ItemStatus(enum.StrEnum):
    pending = "pending"
    running = "running"
    done = "done"  # an answer with HTTP 200: goes to the output file
    failed = "failed"  # goes to the error file
    cancelled = "cancelled"  # never ran: the batch was cancelled
    expired = "expired"  # never ran: the completion window ended


@dataclass(frozen=True, slots=True)
class BatchCounts:
    total: int
    completed: int
    failed: int
    input_tokens: int = 0
    output_tokens: int = 0


def _ts(v: float | None) -> int | None:
    return None if v is None else int(v)


def batch_to_api(row: BatchRow, counts: BatchCounts) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "batch",
        "endpoint": row.endpoint,
        "model": row.model or None,
        "errors": {"object": "list", "data": row.errors} if row.errors else None,
        "input_file_id": row.input_file_id,
        "completion_window": row.completion_window,
        "status": row.status,
        "output_file_id": row.output_file_id,
        "error_file_id": row.error_file_id,
        "created_at": int(row.created_at),
        "in_progress_at": _ts(row.in_progress_at),
        "expires_at": _ts(row.expires_at),
        "finalizing_at": _ts(row.finalizing_at),
        "completed_at": _ts(row.completed_at),
        "failed_at": _ts(row.failed_at),
        "expired_at": _ts(row.expired_at),
        "cancelling_at": _ts(row.cancelling_at),
        "cancelled_at": _ts(row.cancelled_at),
        "request_counts": {
            "total": counts.total,
            "completed": counts.completed,
            "failed": counts.failed,
        },
        "usage": {
            "input_tokens": counts.input_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": counts.output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": counts.input_tokens + counts.output_tokens,
        },
        "metadata": row.meta,
    }


def _line_id() -> str:
    return "batch_req_" + secrets.token_hex(12)


def response_line(custom_id: str, status_code: int, request_id: str, body: Any) -> bytes:
    """A line of the output file (status 200) or of the error file (an HTTP error)."""
    return (
        orjson.dumps(
            {
                "id": _line_id(),
                "custom_id": custom_id,
                "response": {"status_code": status_code, "request_id": request_id, "body": body},
                "error": None,
            }
        )
        + b"\n"
    )


def error_line(custom_id: str, code: str, message: str) -> bytes:
    """A line of the error file for a request that got no HTTP answer at all."""
    return (
        orjson.dumps(
            {
                "id": _line_id(),
                "custom_id": custom_id,
                "response": None,
                "error": {"code": code, "message": message},
            }
        )
        + b"\n"
    )
