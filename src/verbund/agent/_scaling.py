"""When an on-demand model's instances start, drain, stop and are renewed: pure decisions.

:func:`decide` looks at one model's instances, its demand and the clock, and answers the
actions to take; it does nothing itself (the :class:`~verbund.agent.OnDemand` manager
carries them out), so every rule is tested directly with a fake clock.

An instance is ``queued`` (its job waits for the scheduler), ``loading`` (running, the
engine not yet healthy), ``ready`` (routable), ``draining`` (no new requests; stops when
its last request has ended) or ``stopped``. The rules:

- **demand**: requests waiting for a model with nothing ready start one instance; load
  (requests in flight plus waiting) above ``scale_up_load`` per instance starts another,
  up to ``max_instances``; never fewer than ``min_instances``;
- **idle**: no request for ``idle_timeout`` seconds drains everything above
  ``min_instances``;
- **renewal**: ``renew_before`` seconds before an instance's time limit a replacement
  starts (beyond ``max_instances`` if need be); once enough instances that are not due are
  ready, the due one drains — so a model outlives Slurm's time limits without a failed
  request;
- **bounds**: a job still queued after ``queue_timeout`` or loading after ``load_timeout``
  is cancelled (the next decision starts another if demand remains);
- a draining instance with nothing in flight stops.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from verbund.agent._launch_spec import LaunchSpec

__all__ = ["Action", "Demand", "InstanceState", "InstanceView", "decide", "model_status"]


class InstanceState(enum.StrEnum):
    queued = "queued"
    loading = "loading"
    ready = "ready"
    draining = "draining"
    stopped = "stopped"


STARTING = (InstanceState.queued, InstanceState.loading)


@dataclass(frozen=True, slots=True)
class InstanceView:
    """What a decision needs to know of one instance (times on the decision's clock)."""

    id: str
    state: InstanceState
    submitted_at: float
    running_at: float | None = None  # when its job started running
    ends_at: float | None = None  # its time limit ends (None: no limit)
    in_flight: int = 0


@dataclass(frozen=True, slots=True)
class Demand:
    """The model's demand as the access points report it."""

    waiting: int = 0  # requests waiting for an instance (cold start)
    in_flight: int = 0  # requests in flight at its instances that are not draining
    last_request_at: float = -math.inf  # the latest request for the model


@dataclass(frozen=True, slots=True)
class Action:
    kind: str  # "start" | "drain" | "stop" | "cancel"
    instance: str = ""  # "" for start
    reason: str = ""


def _due(i: InstanceView, spec: LaunchSpec, now: float) -> bool:
    return i.ends_at is not None and now >= i.ends_at - spec.renew_before


def wanted(spec: LaunchSpec, demand: Demand, ready_or_starting: int, now: float) -> int:
    """How many instances (not due for renewal) the model should have now."""
    if _idle(spec, demand, now):
        return spec.min_instances
    load = demand.waiting + demand.in_flight
    by_load = math.ceil(load / spec.scale_up_load) if load else 0
    if demand.waiting and not by_load:
        by_load = 1
    # not idle: keep what runs (scaling down happens through idleness only)
    n = max(spec.min_instances, by_load, ready_or_starting, 1 if demand.waiting else 0)
    return min(n, spec.max_instances)


def decide(
    spec: LaunchSpec, instances: list[InstanceView], demand: Demand, now: float
) -> list[Action]:
    actions: list[Action] = []
    live = [i for i in instances if i.state != InstanceState.stopped]
    for i in live:
        if i.state == InstanceState.draining and i.in_flight == 0:
            actions.append(Action("stop", i.id, "drained"))
        elif i.state == InstanceState.queued and now - i.submitted_at >= spec.queue_timeout:
            actions.append(Action("cancel", i.id, "not scheduled within queue_timeout"))
        elif (
            i.state == InstanceState.loading
            and now - (i.running_at if i.running_at is not None else i.submitted_at)
            >= spec.load_timeout
        ):
            actions.append(Action("cancel", i.id, "not healthy within load_timeout"))
    gone = {a.instance for a in actions if a.kind == "cancel"}
    serving = [i for i in live if i.id not in gone and i.state in (*STARTING, InstanceState.ready)]
    fresh = [i for i in serving if not _due(i, spec, now)]
    due = [i for i in serving if _due(i, spec, now)]
    idle = _idle(spec, demand, now)
    want = wanted(spec, demand, len(fresh), now)
    if any(i.state in STARTING for i in fresh):  # load counts once that one is ready
        want = min(want, max(len(fresh), spec.min_instances))
    if not idle:  # in use: each instance due for renewal gets its replacement
        want = max(want, min(len(due), spec.max_instances))
    for _ in range(max(0, want - len(fresh))):
        reason = "renewal" if due else ("cold start" if not serving else "load")
        actions.append(Action("start", "", reason))
    ready_fresh = sum(1 for i in fresh if i.state == InstanceState.ready)
    for i in due:  # drains once enough fresh instances are ready (or nothing wants it)
        if i.state == InstanceState.ready and (ready_fresh >= want or idle):
            actions.append(Action("drain", i.id, "idle" if idle else "renewed"))
    if len(fresh) > want:  # idle: the least busy go first, those not ready before them
        extra = sorted(fresh, key=lambda i: (i.state == InstanceState.ready, i.in_flight))
        for i in extra[: len(fresh) - want]:
            kind = "drain" if i.state == InstanceState.ready else "cancel"
            actions.append(Action(kind, i.id, "idle"))
    return actions


def _idle(spec: LaunchSpec, demand: Demand, now: float) -> bool:
    return (
        demand.waiting == 0
        and demand.in_flight == 0
        and now - demand.last_request_at >= spec.idle_timeout
    )


def model_status(states: list[InstanceState]) -> str:
    """What access points and clients see: ``ready`` (an instance serves), ``starting``
    (one is queued or loading), else ``stopped``."""
    if InstanceState.ready in states:
        return "ready"
    if any(s in STARTING for s in states):
        return "starting"
    return "stopped"
