"""One on-demand instance: its job or process, its state, its times, and the record of it
that outlives the agent.

Times are on the manager's clock (monotonic, so a changed wall clock does not stop a
model or bill it twice). The record the agent keeps under its state folder
(``on-demand/state.json``) holds them as wall-clock times, so a restarted agent, whose
monotonic clock means nothing to the next, takes its instances over where they were.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from verbund.agent._launcher import Launcher
from verbund.agent._scaling import InstanceState

__all__ = ["Instance", "from_record", "to_record"]

_TIMES = ("submitted_at", "running_at", "ready_at", "drain_at", "ends_at")


@dataclass
class Instance:
    id: str
    model: str
    folder: Path
    launcher: Launcher
    cpus: int
    gpus: int
    submitted_at: float
    reason: str
    handle: str = ""
    state: InstanceState = InstanceState.queued
    running_at: float | None = None
    ready_at: float | None = None
    drain_at: float | None = None
    ends_at: float | None = None
    stopped_at: float | None = None
    endpoint: str | None = None
    detail: str = ""
    adopted: bool = False  # started by an earlier run of the agent, taken over after a restart

    @property
    def backend(self) -> str:
        return f"{self.model}:{self.id}"

    def held_seconds(self, now: float) -> float:
        if self.running_at is None:
            return 0.0
        return max(0.0, (self.stopped_at if self.stopped_at is not None else now) - self.running_at)

    def view(self, now: float) -> dict[str, Any]:
        return {
            "id": self.id,
            "backend": self.backend,
            "state": self.state.value,
            "launcher": self.launcher.kind,
            "job": self.handle,
            "endpoint": self.endpoint,
            "reason": self.reason,
            "detail": self.detail,
            "held_seconds": round(self.held_seconds(now), 3),
            # the parts of a start: in the scheduler's queue, then engine start and load
            "queued_seconds": _span(self.submitted_at, self.running_at),
            "load_seconds": _span(self.running_at, self.ready_at),
        }


def _span(start: float | None, end: float | None) -> float | None:
    return round(end - start, 3) if start is not None and end is not None else None


def to_record(i: Instance, clock: Callable[[], float]) -> dict[str, Any]:
    """What a restarted agent needs to take ``i`` over (times as wall-clock seconds)."""
    offset = time.time() - clock()
    rec: dict[str, Any] = {
        "id": i.id, "model": i.model, "folder": str(i.folder), "launcher": i.launcher.kind,
        "handle": i.handle, "cpus": i.cpus, "gpus": i.gpus, "reason": i.reason,
        "state": i.state.value, "endpoint": i.endpoint,
    }  # fmt: skip
    for name in _TIMES:
        at = getattr(i, name)
        rec[name] = None if at is None else round(at + offset, 1)  # stable between ticks
    return rec


def from_record(
    rec: dict[str, Any], launcher: Launcher, clock: Callable[[], float]
) -> Instance | None:
    """The instance ``rec`` describes, adopted: on the clock of this run, its state to be
    confirmed (a ready one is ``loading`` until its engine answers again). None for a
    record this agent cannot take over (another launcher, a damaged record)."""
    try:
        if rec["launcher"] != launcher.kind or rec["state"] == InstanceState.stopped.value:
            return None
        offset = clock() - time.time()
        times = {n: None if rec.get(n) is None else float(rec[n]) + offset for n in _TIMES}
        state = InstanceState(rec["state"])
        if state == InstanceState.ready:
            state = InstanceState.loading
        return Instance(
            id=str(rec["id"]), model=str(rec["model"]), folder=Path(rec["folder"]),
            launcher=launcher, cpus=int(rec["cpus"]), gpus=int(rec["gpus"]),
            submitted_at=times["submitted_at"] or clock(), reason=str(rec["reason"]),
            handle=str(rec["handle"]), state=state, endpoint=rec.get("endpoint"),
            running_at=times["running_at"], ready_at=times["ready_at"],
            drain_at=times["drain_at"], ends_at=times["ends_at"], adopted=True,
        )  # fmt: skip
    except (KeyError, TypeError, ValueError):
        return None
