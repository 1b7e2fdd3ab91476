"""A job as its site agent tells it, and how the federation's store follows it.

The agent owns a job once it accepted it; access points keep a mirror of it in the
federation's store (status, metrics, error, result, events) so that every access point
lists every job, and the last known state stays readable while the agent is away.
:func:`site_state` and :func:`site_event` are the agent's side of the wire,
:func:`follow` the access point's: it takes the mirror to the status the agent reports
(an ended mirror stays ended) and adds each event once (events keep the agent's ids).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from verbund.jobs._status import TERMINAL, JobStatus
from verbund.store import TrainingEventRow, TrainingJobRow

__all__ = ["follow", "site_event", "site_state"]

_COPIED = ("runner", "error", "last_metrics", "started_at", "finished_at")


def site_state(row: TrainingJobRow) -> dict[str, Any]:
    """What an agent tells access points about one of its jobs."""
    result = dict(row.result or {})
    result.pop("artifacts", None)  # a folder at the site: of no use elsewhere
    return {
        "id": row.id,
        "status": row.status,
        "runner": row.runner,
        "runner_done": row.runner_done,
        "error": row.error,
        "result": result or None,
        "last_metrics": row.last_metrics,
        "started_at": row.started_at,
        "finished_at": row.finished_at,
        "cpu_seconds": row.cpu_seconds,
        "gpu_seconds": row.gpu_seconds,
        "fine_tuned_model": row.fine_tuned_model,
    }


def site_event(ev: TrainingEventRow) -> dict[str, Any]:
    return {
        "id": ev.id,
        "created_at": ev.created_at,
        "level": ev.level,
        "type": ev.type,
        "message": ev.message,
        "data": ev.data,
    }


async def follow(
    s: AsyncSession,
    row: TrainingJobRow,
    state: dict[str, Any],
    events: list[dict[str, Any]],
    inputs: dict[str, str],
) -> bool:
    """Bring the (locked) mirror row up to the agent's ``state``; True when the job has
    just ended at its site (its usage is due). ``inputs`` maps the blob keys the agent
    knows the job's files by back to the files' ids, for messages."""

    def public(text: str) -> str:
        for key, file_id in inputs.items():
            text = text.replace(key, file_id)
        return text

    ids = [e["id"] for e in events]
    have = set()
    if ids:
        have = set(
            (await s.execute(select(TrainingEventRow.id).where(TrainingEventRow.id.in_(ids))))
            .scalars()
            .all()
        )
    for e in events:
        if e["id"] in have:
            continue
        s.add(
            TrainingEventRow(
                id=e["id"],
                job_id=row.id,
                created_at=float(e["created_at"]),
                level=str(e["level"]),
                type=str(e["type"]),
                message=public(str(e["message"]))[:1000],
                data=e.get("data") or {},
            )
        )
    status = JobStatus(state["status"])
    if row.status not in TERMINAL:
        for key in _COPIED:
            setattr(row, key, state.get(key))
        if row.error:
            row.error = {**row.error, "message": public(str(row.error.get("message", "")))}
        row.result = state.get("result") or row.result
        # the agent's status is the truth; an ended mirror (cancelled here while the agent
        # was away) stays ended, and the access point sends the cancel again
        if not (status == JobStatus.validating_files and row.status == JobStatus.queued):
            row.status = status
    row.cpu_seconds = float(state.get("cpu_seconds") or 0.0)
    row.gpu_seconds = float(state.get("gpu_seconds") or 0.0)
    ended = bool(state.get("runner_done")) or (status in TERMINAL and state.get("runner") is None)
    if ended and not row.runner_done:
        row.runner_done = True
        return True
    return False
