"""Chaos with real llama.cpp backends: the demo federation (three llama.cpp chat servers
behind one access point), streaming and non-streaming load, one backend killed
(SIGKILL) or stopped part-way (SIGSTOP).

What must hold, with generous bounds only (latency figures are in
``benchmarks/chaos/``):

- no request fails that had not started streaming;
- a stream that had started at the stopped backend ends (an error event: llama.cpp
  cannot resume) within seconds, not after the 120 s read timeout;
- once the access point has noticed the fault (``/admin/sites`` shows the backend down
  or ejected), no new try goes there: its failure count stops growing once the tries
  in flight at that moment have ended.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.demo import Demo, start_demo
from harness.load import (
    Load,
    Result,
    chat_body,
    describe,
    failed_before_streaming,
    read_stream,
)
from harness.polling import poll

pytestmark = pytest.mark.real

MODEL = "smollm2-135m"
VICTIM, VICTIM_SITE = "west-llama-1", "rz-west"
FAULT_SECONDS = 25.0  # SIGSTOP is noticed later than SIGKILL: a probe must time out
# in-flight tries at the moment of detection may still end in failure: a stalled stream
# after the stall bound (routing.stream_stall_floor, 5 s), plus margin
SETTLE_SECONDS = 8.0
# how long after the fault a stream that had begun at the faulty backend may still run
# (it hung for 40 s and more, up to the 120 s read timeout); this shared 2-core machine
# makes llama.cpp slow, so the bound is generous
HANG_BOUND = 25.0


class Watcher:
    """Samples the access point's view of one backend every 0.1 s."""

    def __init__(self, demo: Demo, backend: str) -> None:
        self.demo, self.backend = demo, backend
        self.samples: list[tuple[float, dict[str, Any]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Watcher:
        self._thread.start()
        poll(lambda: bool(self.samples), "a first /admin/sites sample", 10)
        return self

    def _run(self) -> None:
        with self.demo.admin() as admin:
            while not self._stop.is_set():
                t = time.time()
                try:
                    sites = admin.get("/admin/sites").json()["sites"]
                except httpx.HTTPError:
                    continue
                for s in sites:
                    for b in s.get("backends", []):
                        if b["name"] == self.backend:
                            self.samples.append((t, b))
                self._stop.wait(0.1)

    def detected(self, after: float) -> float | None:
        """When the access point first showed the backend out of rotation after ``after``."""
        for t, b in self.samples:
            if t >= after and (not b["healthy"] or b["ejected"]):
                return t
        return None

    def failures(self, at: float) -> int:
        return int([b for t, b in self.samples if t <= at][-1]["failures"])

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    d = start_demo(tmp_path / "state")
    try:
        yield d
    finally:
        for pid in d.backend_pids().values():  # a stopped server must run to stop
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        d.stop()


def body(i: int) -> dict[str, Any]:
    return {**chat_body(i, max_tokens=32), "model": MODEL}


def run_fault(
    demo: Demo, sig: signal.Signals, warm: Callable[[], Callable[[], bool]] | None = None
) -> tuple[list[Any], Watcher, float, float]:
    """Load, then the fault (once ``warm()``'s condition holds), then more load."""
    watch = Watcher(demo, VICTIM).start()
    load = Load(demo.url, demo.key("uni-a"), total=400, concurrency=4, body=body).start()
    load.wait_completed(12, 120)
    if warm is not None:
        poll(warm(), "the pinned stream to be under way", 60)  # raises if it ended first
    fault_at = time.time()
    os.kill(demo.backend_pids()[VICTIM], sig)
    end = time.monotonic() + FAULT_SECONDS
    while time.monotonic() < end:
        demo.process.check()
        time.sleep(0.1)
    load.stop()
    ended_at = time.time()
    results = load.join(120)
    watch.stop()
    return results, watch, fault_at, ended_at


def check(results: list[Any], watch: Watcher, fault_at: float, ended_at: float) -> None:
    lost = failed_before_streaming(results)
    assert lost == [], f"failed before streaming:\n{describe(lost)}"
    at_victim = [r for r in results if r.site == VICTIM_SITE and r.start < fault_at < r.end]
    hung = [r for r in at_victim if r.end - fault_at > HANG_BOUND]
    assert hung == [], f"requests at {VICTIM} hung beyond {HANG_BOUND}s:\n{describe(hung)}"
    detected = watch.detected(fault_at)
    assert detected is not None, "the access point never noticed the fault"
    assert detected + SETTLE_SECONDS < ended_at, "the fault was noticed too late to check"
    late = watch.failures(ended_at) - watch.failures(detected + SETTLE_SECONDS)
    assert late == 0, f"{late} tries went to {VICTIM} after the fault had been noticed"
    print(
        f"{len(results)} requests, {sum(r.failed for r in results)} failed after streaming "
        f"began; noticed {detected - fault_at:.1f}s after the fault"
    )


def test_kill9_of_a_llama_backend_under_load(demo: Demo) -> None:
    check(*run_fault(demo, signal.SIGKILL))


def pinned_stream(demo: Demo) -> tuple[Result, threading.Thread]:
    """A long stream that only the victim may serve (sensitive data: only rz-west)."""
    res = Result(index=-1, stream=True, start=time.time())

    def run() -> None:
        with (
            httpx.Client(timeout=120, trust_env=False) as client,
            client.stream(
                "POST",
                demo.url + "/v1/chat/completions",
                # llama.cpp's ignore_eos: the answer runs to max_tokens, past the fault (a
                # slot holds 512 tokens of context: prompt and answer)
                json={
                    **chat_body(-1, max_tokens=300),
                    "model": MODEL,
                    "stream": True,
                    "ignore_eos": True,
                },
                headers={
                    "authorization": f"Bearer {demo.key('uni-a')}",
                    "x-verbund-data-class": "sensitive",
                },
            ) as r,
        ):
            res.status, res.site = r.status_code, r.headers.get("x-verbund-site", "")
            read_stream(r, res)
        res.end = time.time()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return res, thread


def started(pinned: Result) -> bool:
    assert not pinned.end, f"the pinned stream ended before the fault: {pinned.brief()}"
    return pinned.first_content is not None


def test_sigstop_of_a_llama_backend_mid_stream(demo: Demo) -> None:
    pinned: list[tuple[Result, threading.Thread]] = []

    def warm() -> Callable[[], bool]:
        pinned.append(pinned_stream(demo))
        return lambda: started(pinned[0][0])

    results, watch, fault_at, ended_at = run_fault(demo, signal.SIGSTOP, warm)
    stream, thread = pinned[0]
    thread.join(HANG_BOUND)
    assert stream.site == VICTIM_SITE
    assert stream.end, f"the stream at the stopped backend still hangs after {HANG_BOUND}s"
    assert not stream.done and "error event: stream_interrupted" in stream.error, stream.brief()
    print(f"the pinned stream ended {stream.end - fault_at:.1f}s after SIGSTOP")
    check(results, watch, fault_at, ended_at)
    # every other stream that had begun at the stopped server ended with an error event
    cut = [
        r
        for r in results
        if r.site == VICTIM_SITE and r.started_streaming and r.failed and r.end > fault_at
    ]
    print(f"{len(cut)} more streams cut at the stopped backend")
    assert all("error event" in r.error for r in cut), describe(cut)
