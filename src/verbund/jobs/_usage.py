"""A finished job's usage record: what accounting bills for training (CPU and GPU time)."""

from __future__ import annotations

from verbund.accounting import UsageRecord
from verbund.jobs._status import JobStatus
from verbund.store import TrainingJobRow

ENDPOINT = {"fine_tune": "/v1/fine_tuning/jobs", "training": "/v1/training/jobs"}
_USAGE_STATUS = {JobStatus.succeeded: "ok", JobStatus.failed: "error"}


def job_usage(
    row: TrainingJobRow,
    status: JobStatus,
    *,
    wall_seconds: float,
    cpu_seconds: float,
    gpu_seconds: float,
    finished_at: float,
) -> UsageRecord:
    """One record per job; its id is derived from the job's, so writing it twice (a
    restart in the middle of finishing) counts once."""
    return UsageRecord(
        id=f"job-{row.id}",
        request_id=row.id,
        access_point=row.access_point,
        institution_id=row.institution_id,
        key_id=row.key_id,
        endpoint=ENDPOINT.get(row.kind, "/v1/training/jobs"),
        model=row.fine_tuned_model or row.model,
        site=row.site or "",
        backend=f"runner:{row.runner or ''}",
        status=_USAGE_STATUS.get(status, "incomplete"),
        http_status=200,
        latency_ms=wall_seconds * 1000.0,
        priority="batch",
        cpu_seconds=cpu_seconds,
        gpu_seconds=gpu_seconds,
        ts=finished_at,
    )
