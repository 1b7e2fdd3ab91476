from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.conftest import make_config
from tests.fakes import FakeBackend, transport_factory
from verbund.config import RoutingConfig
from verbund.federation import Failure, Federation, HealthTracker, Probe, Prober, UpstreamPool


@pytest.fixture
def fed(tmp_path: Path) -> Federation:
    return Federation(make_config(tmp_path))


def test_refused_connection_marks_down_at_once(fed: Federation) -> None:
    t = HealthTracker(RoutingConfig())
    b = fed.backends["west-1"]
    t.on_failure(b, Failure.refused, now=10.0)
    assert not b.healthy and not b.available(10.0)


def test_repeated_failures_eject_for_a_growing_time(fed: Federation) -> None:
    t = HealthTracker(
        RoutingConfig(eject_after_failures=3, eject_base_seconds=2, eject_max_seconds=5)
    )
    b = fed.backends["west-1"]
    t.on_failure(b, Failure.timeout, 0.0)
    t.on_failure(b, Failure.server_error, 0.0)
    assert b.available(0.0)
    t.on_failure(b, Failure.timeout, 0.0)
    assert not b.available(1.9) and b.available(2.0)
    for _ in range(3):
        t.on_failure(b, Failure.timeout, 10.0)
    assert not b.available(13.9) and b.available(14.0)  # doubled
    for _ in range(3):
        t.on_failure(b, Failure.timeout, 20.0)
    assert b.available(25.0)  # capped at eject_max_seconds


def test_success_resets_the_count(fed: Federation) -> None:
    t = HealthTracker(RoutingConfig(eject_after_failures=2))
    b = fed.backends["west-1"]
    t.on_failure(b, Failure.timeout, 0.0)
    t.on_success(b)
    t.on_failure(b, Failure.timeout, 0.0)
    assert b.available(0.0)


async def test_probe_brings_a_backend_back(fed: Federation) -> None:
    fakes = {name: FakeBackend(name) for name in fed.backends}
    fakes["sued-1"].mode = "refuse"
    routing = RoutingConfig()
    pool = UpstreamPool(fed, routing, transport_factory(fakes))
    tracker = HealthTracker(routing)
    prober = Prober(fed, pool, tracker, routing)
    await prober.probe_all()
    assert not fed.backends["sued-1"].healthy
    assert fed.backends["west-1"].healthy
    fakes["sued-1"].mode = "ok"
    await prober.probe_all()
    assert fed.backends["sued-1"].healthy
    await pool.aclose()


async def test_probe_uses_the_protocol_health_path(fed: Federation) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return httpx.Response(200)

    routing = RoutingConfig()
    pool = UpstreamPool(fed, routing, lambda b: httpx.MockTransport(handler))
    prober = Prober(fed, pool, HealthTracker(routing), routing)
    await prober.probe_all()
    assert seen == ["/v1/models"] * 3
    await pool.aclose()


def test_at_most_half_of_a_models_backends_are_ejected(fed: Federation) -> None:
    t = HealthTracker(RoutingConfig(eject_after_failures=1, max_ejection_percent=50), fed)
    for name in ("west-1", "sued-1", "ost-1"):
        t.on_failure(fed.backends[name], Failure.timeout, 0.0)
    ejected = [b.name for b in fed.backends.values() if not b.available(0.5)]
    assert ejected == ["west-1"]  # a second one would be 2 of 3 > 50 %
    # a refused connection is different: nothing listens there, it is down regardless
    t.on_failure(fed.backends["ost-1"], Failure.refused, 0.0)
    assert not fed.backends["ost-1"].available(0.5)


def test_returning_backends_start_slowly(fed: Federation) -> None:
    t = HealthTracker(RoutingConfig(eject_after_failures=1, eject_base_seconds=2), fed)
    b = fed.backends["west-1"]
    t.on_failure(b, Failure.timeout, 10.0)
    assert b.returned_at == 12.0  # the ramp starts when the ejection ends
    t.on_failure(fed.backends["sued-1"], Failure.refused, 10.0)
    t.on_probe(fed.backends["sued-1"], Probe.ok, now=15.0)
    assert fed.backends["sued-1"].returned_at == 15.0


def test_one_slow_probe_does_not_mark_down_and_never_while_answering(fed: Federation) -> None:
    t = HealthTracker(RoutingConfig(probe_interval=1.0), fed)
    b = fed.backends["west-1"]
    t.on_probe(b, Probe.failed, now=100.0)
    assert b.healthy  # one timeout is not enough
    t.on_success(b, now=100.5)  # it is busy answering real requests
    t.on_probe(b, Probe.failed, now=101.0)
    assert b.healthy
    t.on_probe(b, Probe.failed, now=110.0)  # silent for long: down
    assert not b.healthy
    t.on_probe(b, Probe.ok, now=111.0)
    assert b.healthy and b.probe_failures == 0


async def test_a_failed_request_is_confirmed_by_an_immediate_probe(fed: Federation) -> None:
    fakes = {name: FakeBackend(name) for name in fed.backends}
    routing = RoutingConfig(probe_interval=60)
    pool = UpstreamPool(fed, routing, transport_factory(fakes))
    tracker = HealthTracker(routing, fed)
    prober = Prober(fed, pool, tracker, routing)
    west, sued = fed.backends["west-1"], fed.backends["sued-1"]
    fakes["west-1"].mode = "refuse"  # the probe fails too: down at once
    prober.suspect(west)
    prober.suspect(sued)  # a keep-alive race: the probe passes, nothing changes
    for task in list(prober._confirming.values()):
        await task
    assert not west.healthy and sued.healthy
    assert fakes["sued-1"].probes == 1
    await pool.aclose()


def test_a_probe_sent_before_the_backend_went_down_cannot_revive_it(fed: Federation) -> None:
    t = HealthTracker(RoutingConfig(), fed)
    b = fed.backends["west-1"]
    t.on_probe(b, Probe.failed, now=10.0, confirming=True)  # a failed request, confirmed
    assert not b.healthy
    t.on_probe(b, Probe.ok, now=10.2, sent_at=9.9)  # that probe left before the fault
    assert not b.healthy
    t.on_probe(b, Probe.ok, now=11.0, sent_at=10.5)
    assert b.healthy


def test_probe_driven_down_is_capped_too_but_refused_is_not(fed: Federation) -> None:
    t = HealthTracker(RoutingConfig(max_ejection_percent=50), fed)
    for name in ("west-1", "sued-1", "ost-1"):  # every probe times out (a starved AP)
        t.on_probe(fed.backends[name], Probe.failed, now=1000.0, confirming=True)
    assert [b.name for b in fed.backends.values() if not b.healthy] == ["west-1"]
    t.on_probe(fed.backends["ost-1"], Probe.refused, now=1000.0)  # nothing listens
    assert not fed.backends["ost-1"].healthy and fed.backends["ost-1"].refused
    t.on_probe(fed.backends["ost-1"], Probe.ok, now=1001.0)
    assert fed.backends["ost-1"].healthy and not fed.backends["ost-1"].refused


def test_5xx_ejection_waits_for_a_probe_and_repeats_count_once(fed: Federation) -> None:
    t = HealthTracker(RoutingConfig(eject_after_failures=2), fed)
    b = fed.backends["west-1"]
    for _ in range(5):  # one request content failing again and again
        t.on_failure(b, Failure.server_error, 10.0, key=b"same")
    assert b.consecutive_failures == 1 and not t.awaiting_confirmation(b)
    t.on_failure(b, Failure.server_error, 10.0, key=b"other")
    assert t.awaiting_confirmation(b) and b.available(10.0)  # not ejected yet
    t.on_probe(b, Probe.ok, now=10.5, sent_at=10.1)  # the backend is fine: the requests
    assert not t.awaiting_confirmation(b) and b.ejections == 0 and b.consecutive_failures == 0
    for key in (b"a", b"b"):
        t.on_failure(b, Failure.server_error, 20.0, key=key)
    t.on_probe(b, Probe.failed, now=20.5, sent_at=20.1)  # it is the backend
    assert b.ejections == 1 and not b.available(20.5)
