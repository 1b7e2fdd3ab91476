"""Chaos under load with real processes: what issue 3 ("Resilient federation routing") demands.

Three sites, each one simulated engine of a different speed (west fast, sued medium, ost
slow), one model served at all of them, a real access point (``verbund gateway``), and
steady closed-loop load (4 workers, half the requests streamed). During the load one
engine at the home site ``west`` is killed (SIGKILL), stalled (SIGSTOP, then SIGCONT),
has its connections reset, or its site is drained. The demands, as the issue states them:

- zero failed requests that had not started streaming (kill, stall, reset; drain: zero
  failed requests at all). A stream has started once the access point sent its first
  event (the first byte): past that point the design allows an error event, unless the
  answer is resumed on another backend (every backend here declares
  ``resume = "continue_final_message"``); such streams are counted in the printed summary;
- no new request sent to a dead backend later than ``SEND_BOUND`` (1 s) after the fault;
- during a stall every request ends within ``STALL_HANG_BOUND`` (a generous bound
  against hangs; the stall runs with 8 workers so that load keeps reaching the stalled
  engine). Latency figures during a stall (the p99 target of 3 s) are measured by the
  chaos benchmark, ``benchmarks/chaos/stall_kill.py``, not asserted here;
- a backend that comes back gets traffic again within ``RECOVERY_BOUND`` (10 s: probe
  interval 2 s, the first ejection 2 s, a slow start, and margin).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harness.gateway import GatewayProcess
from harness.load import (
    BackendWatcher,
    Load,
    Result,
    describe,
    failed_before_streaming,
    percentile,
)
from harness.ports import free_port
from harness.simengine import EngineProcess, EngineSpec, Site, engine_federation
from harness.tcprelay import RelayThread

pytestmark = pytest.mark.real

SEND_BOUND = 1.0
STALL_HANG_BOUND = 30.0
RECOVERY_BOUND = 10.0
FAULT_SECONDS = 8.0  # how long a stall or a reset lasts
AFTER_RECOVERY = RECOVERY_BOUND + 2.0  # load keeps running this long after the repair
VICTIM, VICTIM_SITE = "west-1", "west"

SPECS = {
    "west": EngineSpec("west-1", decode_ms_per_token=15.0),
    "sued": EngineSpec("sued-1", decode_ms_per_token=25.0),
    "ost": EngineSpec("ost-1", decode_ms_per_token=40.0),
}
REGIONS = {"west": "NW", "sued": "BY", "ost": "SN"}


@dataclass
class Federation:
    """The processes of one chaos test (stopped by the fixture that started them)."""

    engines: dict[str, EngineProcess]
    gateway: GatewayProcess
    extra: list[RelayThread] = field(default_factory=list)


Build = Callable[..., Federation]


@pytest.fixture
def build(tmp_path: Path) -> Iterator[Build]:
    to_stop: list[EngineProcess | RelayThread | GatewayProcess] = []

    def factory(relay_sites: tuple[str, ...] = ()) -> Federation:
        engines = {}
        for s, spec in SPECS.items():
            engines[s] = EngineProcess(spec, tmp_path, port=free_port()).launch()
            to_stop.append(engines[s])
        for e in engines.values():
            e.wait_ready()
        sites, relays = [], []
        for name, e in engines.items():
            url = e.url
            if name in relay_sites:
                relay = RelayThread(("127.0.0.1", e.port))
                to_stop.append(relay)
                relays.append(relay)
                url = f"http://127.0.0.1:{relay.port}"
            sites.append(Site(name, REGIONS[name], [(e.spec, url)]))
        config = engine_federation(tmp_path, free_port(), sites, home_site="west")
        gateway = GatewayProcess(config, tmp_path)
        to_stop.insert(0, gateway)
        return Federation(engines, gateway.serve(), relays)

    yield factory
    for x in to_stop:
        x.stop()


def run_for(load: Load, fed: Federation, seconds: float) -> None:
    """Let the experiment run ``seconds`` (a duration, not a wait for an event)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        assert fed.gateway.process.running, "the access point died"
        time.sleep(0.1)


def served_by(results: list[Result], site: str, after: float, before: float) -> list[Result]:
    return [r for r in results if r.site == site and after < r.start <= before and r.done]


def summary(results: list[Result], t0: float) -> str:
    failed = [r for r in results if r.failed]
    lat = [r.latency for r in results]
    no_content = [r for r in failed if r.started_streaming and r.first_content is None]
    return (
        f"{len(results)} requests, {len(failed)} failed "
        f"({len(failed_before_streaming(results))} before streaming, "
        f"{len(no_content)} after the first event but before any content); "
        f"latency p50 {percentile(lat, 50):.2f}s p99 {percentile(lat, 99):.2f}s; "
        f"first at t0+{min(r.start for r in results) - t0:.1f}s"
    )


def test_kill9_of_an_engine_under_load(build: Build) -> None:
    fed = build()
    watch = BackendWatcher(fed.gateway).start()
    load = Load(fed.gateway.url, fed.gateway.key, total=400).start()
    load.wait_completed(16, 60)
    victim = fed.engines[VICTIM_SITE]
    killed_at = victim.kill()
    run_for(load, fed, FAULT_SECONDS)
    failures_at_bound = watch.value(VICTIM, "failures", killed_at + SEND_BOUND)
    failures_before_restart = watch.value(VICTIM, "failures", time.time())
    restarted_at = time.time()
    victim.start()  # the same port again
    run_for(load, fed, AFTER_RECOVERY)
    load.stop()
    results = load.join(120)
    watch.stop()
    print(summary(results, killed_at))

    lost = failed_before_streaming(results)
    assert lost == [], f"failed before streaming:\n{describe(lost)}"
    late_tries = failures_before_restart - failures_at_bound
    assert late_tries == 0, (
        f"{late_tries} tries went to the killed backend later than {SEND_BOUND}s after the kill"
    )
    back = served_by(results, VICTIM_SITE, restarted_at, restarted_at + RECOVERY_BOUND)
    assert back, f"the restarted engine got no traffic within {RECOVERY_BOUND}s"


def test_sigstop_stall_then_sigcont(build: Build) -> None:
    fed = build()
    load = Load(fed.gateway.url, fed.gateway.key, total=900, concurrency=8).start()
    load.wait_completed(16, 60)
    victim = fed.engines[VICTIM_SITE]
    stalled_at = victim.stall()
    run_for(load, fed, FAULT_SECONDS)
    resumed_at = victim.resume()
    run_for(load, fed, AFTER_RECOVERY)
    load.stop()
    results = load.join(150)
    print(summary(results, stalled_at))

    lost = failed_before_streaming(results)
    assert lost == [], f"failed before streaming:\n{describe(lost)}"

    # the stalled engine reads what was sent to it once it runs again; a request the
    # client started after stalled_at + 1 s (and well before SIGCONT) that the engine
    # received was certainly sent to it after the bound
    received = {e["request_id"] for e in victim.stats()["received_log"]}
    late = [
        r
        for r in results
        if stalled_at + SEND_BOUND < r.start < resumed_at - 0.2 and r.request_id in received
    ]
    assert late == [], (
        f"{len(late)} requests were sent to the stalled backend later than {SEND_BOUND}s "
        f"after the stall:\n{describe(late)}"
    )

    during = [
        r
        for r in results
        if r.start <= resumed_at
        and r.end >= stalled_at
        and (r.first_event is None or r.first_event >= stalled_at)
    ]
    assert during, "no requests in flight during the stall"
    print(f"p99 during the stall {percentile([r.latency for r in during], 99):.2f}s")
    hung = [r for r in during if r.latency > STALL_HANG_BOUND]
    assert hung == [], f"requests hung during the stall:\n{describe(hung, 5)}"

    back = served_by(results, VICTIM_SITE, resumed_at, resumed_at + RECOVERY_BOUND)
    assert back, f"the resumed engine got no traffic within {RECOVERY_BOUND}s of SIGCONT"


def test_connection_resets(build: Build) -> None:
    fed = build(relay_sites=(VICTIM_SITE,))
    relay = fed.extra[0]
    assert isinstance(relay, RelayThread)
    load = Load(fed.gateway.url, fed.gateway.key, total=600).start()
    load.wait_completed(16, 60)
    reset_at = time.time()
    relay.set_mode("reset")  # RST every open connection and every new one
    run_for(load, fed, FAULT_SECONDS)
    healed_at = time.time()
    relay.set_mode("pass")
    run_for(load, fed, AFTER_RECOVERY)
    load.stop()
    results = load.join(120)
    print(summary(results, reset_at))

    lost = failed_before_streaming(results)
    assert lost == [], f"failed before streaming:\n{describe(lost)}"
    late = [
        s
        for s in relay.seen
        if s.method == "POST" and reset_at + SEND_BOUND < s.time < healed_at and s.mode == "reset"
    ]
    assert late == [], (
        f"{len(late)} requests went to the resetting backend later than {SEND_BOUND}s after "
        f"the fault, the last at +{late[-1].time - reset_at:.1f}s"
        if late
        else ""
    )
    back = served_by(results, VICTIM_SITE, healed_at, healed_at + RECOVERY_BOUND)
    assert back, f"the healed backend got no traffic within {RECOVERY_BOUND}s"


def test_drain_under_load_fails_nothing(build: Build) -> None:
    fed = build()
    load = Load(fed.gateway.url, fed.gateway.key, total=120).start()
    load.wait_completed(16, 60)
    drained = fed.gateway.admin("POST", f"/admin/sites/{VICTIM_SITE}/drain")
    drained_at = time.time()
    assert drained["state"] == "draining"
    results = load.join(180)
    print(summary(results, drained_at))

    failed = [r for r in results if r.failed]
    assert failed == [], f"failed during a drain:\n{describe(failed)}"
    assert served_by(results, VICTIM_SITE, 0, drained_at), "the load never used the site"
    after = served_by(results, VICTIM_SITE, drained_at, float("inf"))
    assert after == [], f"new requests went to the drained site:\n{describe(after)}"
