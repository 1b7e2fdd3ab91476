"""Fairness against a real access point: one institution's slow and abusive clients (slow
headers, slow bodies, streams nobody reads, absurd ``max_tokens``, more requests than
it may have open) while another institution's steady load goes on.

The bound stated and checked: every steady request succeeds, and the slowest takes
under 5 s (a steady request alone takes a few milliseconds; the bound is generous
because this machine is shared). The latency figures themselves belong to the overhead
benchmark's "under attack" run, not to this test.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from harness import federation as fed
from harness.attack import Attack
from harness.gateway import GatewayProcess
from harness.ports import free_port
from harness.simengine import MODEL, EngineProcess, EngineSpec

pytestmark = pytest.mark.real

STEADY_REQUESTS = 150
ABUSERS = 12  # of each kind


@pytest.fixture
def federation(tmp_path: Path) -> Iterator[tuple[GatewayProcess, str, str]]:
    engine = EngineProcess(
        EngineSpec("sim-1", slots=64, decode_ms_per_token=2.0, prefill_ms_per_token=0.01),
        tmp_path,
    ).start()
    config = fed.federation(
        "ap-fair",
        tmp_path / "state",
        [fed.site("west", "NW", [engine.spec.backend(engine.url, max_concurrency=64)])],
        port=free_port(),
        models=[MODEL],
        institutions=[fed.institution("abuser"), fed.institution("steady")],
        gateway={
            "max_in_flight": 24,
            "header_timeout": 2.0,
            "body_timeout": 2.0,
            "body_min_rate": 1024,
        },
        limits={"max_concurrent_per_institution": 16, "stream_write_timeout": 2.0},
    )
    gw = GatewayProcess(config, tmp_path / "gw").serve("abuser")
    steady_key = gw.create_key("steady")["key"]
    try:
        yield gw, gw.key, steady_key
    finally:
        gw.stop()
        engine.stop()


def test_a_steady_tenant_is_served_while_another_abuses(
    federation: tuple[GatewayProcess, str, str],
) -> None:
    gw, abuser, steady = federation
    host, port = gw.config["gateway"]["listen"].split(":")
    results: list[tuple[int, float]] = []
    with Attack((host, int(port)), abuser, MODEL, ABUSERS) as attack:
        time.sleep(1.0)  # the attack is under way before the steady load starts
        with httpx.Client(base_url=gw.url, trust_env=False, timeout=30) as client:
            for i in range(STEADY_REQUESTS):
                began = time.monotonic()
                try:
                    r = client.post(
                        "/v1/chat/completions",
                        headers={"authorization": f"Bearer {steady}"},
                        json={
                            "model": MODEL,
                            "max_tokens": 8,
                            "stream": i % 3 == 0,
                            "messages": [{"role": "user", "content": f"Frage {i}"}],
                        },
                    )
                    status = r.status_code
                except httpx.HTTPError:
                    status = 0
                results.append((status, time.monotonic() - began))
                time.sleep(0.02)
    refused = attack.statuses
    failed = [s for s, _ in results if s != 200]
    slowest = max(d for _, d in results)
    assert failed == [], f"{len(failed)} of {STEADY_REQUESTS} steady requests failed: {failed}"
    assert slowest < 5.0, f"the slowest steady request took {slowest:.1f} s"
    assert refused and set(refused) <= {400, 429, 503}  # the greedy tenant got no answers
    # the abuser's open requests went nowhere near the steady tenant's
    view = gw.admin("GET", "/admin/sites")
    assert view["sites"][0]["healthy"]
