"""Housekeeping's decisions, without a store: what each active batch needs next."""

from __future__ import annotations

from verbund.batch import BatchStatus, ItemStatus
from verbund.batch._housekeeping import survey
from verbund.store import BatchRow

NOW = 1000.0


def batch(
    id: str,
    status: BatchStatus = BatchStatus.in_progress,
    *,
    final: BatchStatus | None = None,
    expires_at: float = NOW + 60,
    lease_until: float = 0.0,
) -> BatchRow:
    return BatchRow(
        id=id, status=status, final_status=final, expires_at=expires_at, lease_until=lease_until
    )


def test_survey_sorts_batches_by_what_they_need() -> None:
    rows = [
        batch("runs"),
        batch("late", expires_at=NOW),
        batch("cancelled", BatchStatus.cancelling, final=BatchStatus.cancelled),
        batch("drained"),
        batch("taken", BatchStatus.finalizing, final=BatchStatus.expired, lease_until=NOW + 5),
        batch("orphan", BatchStatus.finalizing, lease_until=NOW - 1),
    ]
    work = {ItemStatus.pending: 3, ItemStatus.running: 1}
    counts = {
        "runs": work,
        "late": work,
        "cancelled": work,
        "drained": {ItemStatus.done: 4},
        "taken": {},
        "orphan": {},
    }
    found = survey(rows, counts, NOW)
    assert found.expiring == ["late"]
    assert found.stops == {"late": ItemStatus.expired, "cancelled": ItemStatus.cancelled}
    # a finalization whose runner still holds its lease is left alone
    assert found.ready == ["late", "cancelled", "drained", "orphan"]
    assert [r.id for r in found.running] == ["runs"]


def test_an_expired_final_status_stops_items_as_expired() -> None:
    rows = [batch("b", BatchStatus.in_progress, final=BatchStatus.expired)]
    found = survey(rows, {"b": {ItemStatus.pending: 1}}, NOW)
    assert found.expiring == []  # already marked, by this or another access point
    assert found.stops == {"b": ItemStatus.expired}
