"""On-demand lifecycle decisions, with a fake clock: start, scale, idle, renewal, bounds."""

from __future__ import annotations

from verbund.agent._launch_spec import LaunchSpec
from verbund.agent._scaling import (
    Action,
    Demand,
    InstanceState,
    InstanceView,
    decide,
    model_status,
)

Q, L, R, D, S = (
    InstanceState.queued,
    InstanceState.loading,
    InstanceState.ready,
    InstanceState.draining,
    InstanceState.stopped,
)


def spec(**kw: object) -> LaunchSpec:
    base: dict[str, object] = {
        "model": "m",
        "max_instances": 2,
        "idle_timeout": 60,
        "scale_up_load": 2,
        "queue_timeout": 100,
        "load_timeout": 50,
        "renew_before": 30,
        "time_limit_minutes": 10,
    }
    return LaunchSpec.model_validate({**base, **kw})


def kinds(actions: list[Action]) -> list[tuple[str, str]]:
    return [(a.kind, a.instance) for a in actions]


def test_a_waiting_request_starts_one_instance_of_a_stopped_model() -> None:
    out = decide(spec(), [], Demand(waiting=1, last_request_at=0), now=0)
    assert kinds(out) == [("start", "")] and out[0].reason == "cold start"


def test_nothing_starts_without_demand_and_min_instances_is_kept() -> None:
    assert decide(spec(), [], Demand(), now=1000) == []
    out = decide(spec(min_instances=1), [], Demand(), now=1000)
    assert kinds(out) == [("start", "")]


def test_a_starting_instance_is_not_started_twice() -> None:
    i = InstanceView("a", Q, submitted_at=0)
    assert decide(spec(), [i], Demand(waiting=3, last_request_at=0), now=1) == []


def test_load_above_the_threshold_starts_another_up_to_max() -> None:
    a = InstanceView("a", R, submitted_at=0, in_flight=3)
    out = decide(spec(), [a], Demand(in_flight=3, waiting=1, last_request_at=5), now=5)
    assert kinds(out) == [("start", "")] and out[0].reason == "load"
    b = InstanceView("b", R, submitted_at=0, in_flight=3)
    assert decide(spec(), [a, b], Demand(in_flight=6, waiting=5, last_request_at=5), now=5) == []


def test_idle_drains_and_a_drained_instance_stops() -> None:
    a = InstanceView("a", R, submitted_at=0)
    assert decide(spec(), [a], Demand(last_request_at=10), now=69) == []
    assert kinds(decide(spec(), [a], Demand(last_request_at=10), now=70)) == [("drain", "a")]
    d = InstanceView("a", D, submitted_at=0, in_flight=1)
    assert decide(spec(), [d], Demand(last_request_at=10), now=71) == []
    d0 = InstanceView("a", D, submitted_at=0)
    assert kinds(decide(spec(), [d0], Demand(last_request_at=10), now=72)) == [("stop", "a")]


def test_idle_keeps_min_instances_and_drains_the_least_busy() -> None:
    a = InstanceView("a", R, submitted_at=0, in_flight=0)
    b = InstanceView("b", R, submitted_at=0, in_flight=0)
    out = decide(spec(min_instances=1), [a, b], Demand(last_request_at=0), now=100)
    assert [a.kind for a in out] == ["drain"]


def test_a_job_never_scheduled_is_cancelled_after_the_bound() -> None:
    q = InstanceView("a", Q, submitted_at=0)
    assert decide(spec(), [q], Demand(waiting=1, last_request_at=0), now=99) == []
    out = decide(spec(), [q], Demand(waiting=1, last_request_at=0), now=100)
    assert ("cancel", "a") in kinds(out) and ("start", "") in kinds(out)


def test_an_engine_that_never_becomes_healthy_is_cancelled() -> None:
    lo = InstanceView("a", L, submitted_at=0, running_at=10)
    assert decide(spec(), [lo], Demand(waiting=1, last_request_at=0), now=59) == []
    assert ("cancel", "a") in kinds(decide(spec(), [lo], Demand(waiting=1), now=60))


def test_renewal_starts_a_replacement_before_the_time_limit_then_drains_the_old() -> None:
    old = InstanceView("old", R, submitted_at=0, running_at=0, ends_at=600, in_flight=1)
    busy = Demand(in_flight=1, last_request_at=569)
    assert decide(spec(), [old], busy, now=569) == []
    out = decide(spec(), [old], busy, now=570)
    assert kinds(out) == [("start", "")] and out[0].reason == "renewal"
    new = InstanceView("new", L, submitted_at=570, running_at=571)
    assert decide(spec(), [old, new], busy, now=575) == []  # the old serves until then
    new = InstanceView("new", R, submitted_at=570, running_at=571, ends_at=1171)
    assert kinds(decide(spec(), [old, new], busy, now=580)) == [("drain", "old")]


def test_renewal_goes_beyond_max_instances_for_a_moment() -> None:
    a = InstanceView("a", R, submitted_at=0, ends_at=600, in_flight=2)
    b = InstanceView("b", R, submitted_at=0, ends_at=900, in_flight=2)
    out = decide(spec(), [a, b], Demand(in_flight=4, last_request_at=580), now=580)
    assert kinds(out) == [("start", "")]  # a third, while a serves until it is ready


def test_an_idle_model_due_for_renewal_is_drained_not_renewed() -> None:
    old = InstanceView("old", R, submitted_at=0, ends_at=600)
    out = decide(spec(), [old], Demand(last_request_at=0), now=580)
    assert kinds(out) == [("drain", "old")]


def test_a_vanished_instance_is_replaced_while_in_use() -> None:
    gone = InstanceView("a", S, submitted_at=0)
    out = decide(spec(), [gone], Demand(in_flight=0, waiting=1, last_request_at=5), now=6)
    assert kinds(out) == [("start", "")]


def test_model_status() -> None:
    assert model_status([]) == "stopped"
    assert model_status([S, D]) == "stopped"
    assert model_status([Q]) == "starting"
    assert model_status([L, R]) == "ready"
