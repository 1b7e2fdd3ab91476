"""A job's public status and the moves between statuses, written down once.

The values are OpenAI's fine-tuning job statuses: they are stored as they are and the
API shows them unchanged, so clients (the OpenAI SDK among them) can rely on them.
:data:`TRANSITIONS` is the whole life of a job; every status change in
:mod:`verbund.jobs` goes through :func:`move`, which refuses a move the table does not
list, so a bug (or a race between access points) cannot bring an ended job back to life.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from verbund.errors import JobStateError
from verbund.jobs._runner import RunPhase
from verbund.store import TrainingJobRow

__all__ = [
    "INITIAL",
    "TERMINAL",
    "TRANSITIONS",
    "JobStatus",
    "allowed",
    "final_status",
    "move",
]


class JobStatus(enum.StrEnum):
    validating_files = "validating_files"  # the files are checked before the job queues
    queued = "queued"  # waiting for a site, or in a site's queue
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


INITIAL = JobStatus.validating_files
TERMINAL: frozenset[JobStatus] = frozenset(
    {JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled}
)

TRANSITIONS: Mapping[JobStatus, frozenset[JobStatus]] = {
    JobStatus.validating_files: frozenset(
        {JobStatus.queued, JobStatus.failed, JobStatus.cancelled}
    ),
    # a job can end without ever being seen running (a short job between two polls)
    JobStatus.queued: frozenset({JobStatus.running, *TERMINAL}),
    # a site may requeue a running job (preemption, node failure)
    JobStatus.running: frozenset({JobStatus.queued, *TERMINAL}),
    JobStatus.succeeded: frozenset(),
    JobStatus.failed: frozenset(),
    JobStatus.cancelled: frozenset(),
}


def allowed(current: str, new: JobStatus) -> bool:
    """Whether a job in ``current`` may move to ``new``; an unknown status may not move."""
    try:
        return new in TRANSITIONS[JobStatus(current)]
    except ValueError:
        return False


def move(row: TrainingJobRow, new: JobStatus) -> None:
    """Set the row's status to ``new``, or raise :class:`JobStateError` if it may not."""
    if not allowed(row.status, new):
        raise JobStateError(f"job {row.id}: {row.status} cannot become {new.value}")
    row.status = new


def final_status(
    current: str, *, cancel_requested: bool, phase: RunPhase, collected: bool
) -> JobStatus:
    """The status a job ends in once its runner is done with it.

    A job that has ended already (cancelled by its user) keeps its status; a cancel
    request wins over whatever the site reported; success needs usable artefacts.
    """
    if current in TERMINAL:
        return JobStatus(current)
    if cancel_requested or phase is RunPhase.cancelled:
        return JobStatus.cancelled
    if phase is RunPhase.succeeded and collected:
        return JobStatus.succeeded
    return JobStatus.failed
