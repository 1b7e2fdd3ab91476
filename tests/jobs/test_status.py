"""The job status table: the public strings, which moves are allowed, how a job ends."""

from __future__ import annotations

import pytest

from verbund.errors import JobStateError
from verbund.jobs import INITIAL, TERMINAL, TRANSITIONS, JobStatus, RunPhase, allowed, move
from verbund.jobs._status import final_status
from verbund.store import TrainingJobRow


def test_statuses_are_openais_strings() -> None:
    assert {s.value for s in JobStatus} == {
        "validating_files",
        "queued",
        "running",
        "succeeded",
        "failed",
        "cancelled",
    }
    assert JobStatus.queued == "queued" and f"{JobStatus.running}" == "running"


def test_every_status_is_reachable_and_every_job_can_end() -> None:
    assert set(TRANSITIONS) == set(JobStatus)
    seen, todo = {INITIAL}, [INITIAL]
    while todo:
        for nxt in TRANSITIONS[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    assert seen == set(JobStatus)
    for status in JobStatus:
        if status in TERMINAL:
            assert not TRANSITIONS[status], f"{status} has ended and must not move"
        else:
            assert TRANSITIONS[status] & TERMINAL, f"{status} cannot end"


@pytest.mark.parametrize(
    ("current", "new"),
    [
        (JobStatus.succeeded, JobStatus.running),
        (JobStatus.cancelled, JobStatus.failed),
        (JobStatus.failed, JobStatus.queued),
        (JobStatus.validating_files, JobStatus.running),
        (JobStatus.validating_files, JobStatus.succeeded),
        ("no-such-status", JobStatus.queued),
    ],
)
def test_an_illegal_move_is_refused(current: str, new: JobStatus) -> None:
    assert not allowed(current, new)
    row = TrainingJobRow(id="ftjob-x", status=current)
    with pytest.raises(JobStateError):
        move(row, new)
    assert row.status == current


def test_a_legal_move_sets_the_status() -> None:
    row = TrainingJobRow(id="ftjob-x", status="running")
    move(row, JobStatus.queued)  # requeued by the site
    assert row.status == "queued"
    move(row, JobStatus.succeeded)  # ended between two polls
    assert row.status == "succeeded"


@pytest.mark.parametrize(
    ("current", "cancel", "phase", "collected", "expected"),
    [
        ("running", False, RunPhase.succeeded, True, JobStatus.succeeded),
        ("running", False, RunPhase.succeeded, False, JobStatus.failed),
        ("queued", False, RunPhase.failed, False, JobStatus.failed),
        ("running", False, RunPhase.cancelled, False, JobStatus.cancelled),
        ("running", True, RunPhase.succeeded, True, JobStatus.cancelled),
        ("cancelled", True, RunPhase.succeeded, True, JobStatus.cancelled),
    ],
)
def test_final_status(
    current: str, cancel: bool, phase: RunPhase, collected: bool, expected: JobStatus
) -> None:
    got = final_status(current, cancel_requested=cancel, phase=phase, collected=collected)
    assert got is expected
